
import pytest
import torch
from torchvision.ops import box_iou

from effdet.ops.box_coder import BoxCoder
from effdet.modeling.anchors import generate_anchors
from effdet.modeling.assign import AnchorMatcher, pairwise_iou

from tests.helpers.parity import needs_reference, run_reference  # tests/helpers/parity.py

# Anchors whose IoU with the box [0, 0, 10, 10] is 1, 0.5, 0.4, 100/225 = 0.444 and 100/260 = 0.385.
HAND_ANCHORS = torch.tensor([
    [0.0, 0.0, 10.0, 10.0],
    [0.0, 0.0, 10.0, 20.0],
    [0.0, 0.0, 10.0, 25.0],
    [0.0, 0.0, 10.0, 22.5],
    [0.0, 0.0, 10.0, 26.0],
    [500.0, 500.0, 510.0, 510.0],
])
UNIT_BOX = torch.tensor([[[0.0, 0.0, 10.0, 10.0]]])


def test_pairwise_iou_equals_torchvision():
    torch.manual_seed(0)
    corners = torch.rand(7, 2) * 100
    boxes = torch.cat([corners, corners + torch.rand(7, 2) * 50 + 1], dim=1)
    anchors = generate_anchors(128)
    assert torch.equal(pairwise_iou(boxes, anchors), box_iou(boxes, anchors))


def test_thresholds_with_ignore_band():
    matcher = AnchorMatcher(match_threshold=0.5, unmatched_threshold=0.4)
    cls, box, num_pos = matcher(HAND_ANCHORS, UNIT_BOX, torch.tensor([[7]]))
    assert cls.tolist() == [[7, 7, -2, -2, -1, -1]]
    assert num_pos.tolist() == [2.0]
    assert box.shape == (1, 6, 4)
    expected = BoxCoder().encode(UNIT_BOX[0, 0].expand(2, 4), HAND_ANCHORS[:2])
    assert torch.allclose(box[0, :2], expected)
    assert torch.count_nonzero(box[0, 2:]) == 0
    # the unit box against anchor 1 (twice as high, same top): centre 5 vs 10 -> ty = -0.25, th = log(1/2)
    assert torch.allclose(box[0, 1], torch.tensor([-0.25, 0.0, -0.6931472, 0.0]), atol=1e-6)


def test_default_has_no_ignore_band_like_reference():
    cls, _, num_pos = AnchorMatcher()(HAND_ANCHORS, UNIT_BOX, torch.tensor([[3]]))
    assert cls.tolist() == [[3, 3, -1, -1, -1, -1]]
    assert num_pos.tolist() == [2.0]


def test_best_anchor_of_each_box_is_forced_positive():
    # IoU of this box with anchor 0 is 0.25, lower than every threshold; all other IoUs are smaller.
    box = torch.tensor([[[0.0, 0.0, 5.0, 5.0]]])
    cls, box_targets, num_pos = AnchorMatcher()(HAND_ANCHORS, box, torch.tensor([[4]]))
    assert cls.tolist() == [[4, -1, -1, -1, -1, -1]]
    assert num_pos.tolist() == [1.0]
    assert torch.count_nonzero(box_targets[0, 0]) > 0


def test_shared_best_anchor_goes_to_lowest_box_index():
    anchors = torch.tensor([[0.0, 0.0, 100.0, 100.0], [300.0, 300.0, 310.0, 310.0]])
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]])  # both IoU 0.01 with anchor 0
    cls, _, num_pos = AnchorMatcher()(anchors, boxes, torch.tensor([[1, 2]]))
    assert cls.tolist() == [[1, -1]]
    assert num_pos.tolist() == [1.0]


def test_each_anchor_takes_its_best_box():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    boxes = torch.tensor([[[0.0, 0.0, 10.0, 9.0], [19.0, 0.0, 30.0, 10.0], [0.0, 0.0, 30.0, 10.0]]])
    cls, box_targets, _ = AnchorMatcher()(anchors, boxes, torch.tensor([[5, 6, 7]]))
    assert cls.tolist() == [[5, 6]]
    assert torch.allclose(box_targets[0, 1], BoxCoder().encode(boxes[0, 1], anchors[1]))


def test_padding_rows_never_match():
    boxes = torch.cat([UNIT_BOX, torch.tensor([[[500.0, 500.0, 510.0, 510.0]]])], dim=1)
    cls, _, num_pos = AnchorMatcher()(HAND_ANCHORS, boxes, torch.tensor([[2, -1]]))
    assert cls[0, 5].item() == -1  # the padded box equals anchor 5 exactly
    assert num_pos.tolist() == [2.0]


def test_image_without_boxes_is_all_background():
    anchors = generate_anchors(128)
    boxes = torch.zeros(2, 3, 4)
    labels = torch.tensor([[-1, -1, -1], [0, -1, -1]])
    boxes[1, 0] = torch.tensor([10.0, 10.0, 50.0, 60.0])
    cls, box_targets, num_pos = AnchorMatcher()(anchors, boxes, labels)
    assert (cls[0] == -1).all()
    assert torch.count_nonzero(box_targets[0]) == 0
    assert num_pos[0].item() == 0 and num_pos[1].item() >= 1
    assert cls.dtype == torch.int64 and box_targets.dtype == torch.float32 and num_pos.dtype == torch.float32
    # no boxes at all (M = 0)
    cls, box_targets, num_pos = AnchorMatcher()(anchors, torch.zeros(2, 0, 4), torch.zeros(2, 0, dtype=torch.long))
    assert (cls == -1).all() and num_pos.tolist() == [0.0, 0.0]


def test_crowd_regions_ignore_covered_non_positive_anchors():
    anchors = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],      # positive for the box below, inside the crowd region
        [100.0, 100.0, 110.0, 110.0],  # fully inside the crowd region -> ignored
        [115.0, 100.0, 125.0, 110.0],  # half inside (IoA 0.5 < 0.7) -> background
        [300.0, 300.0, 310.0, 310.0],  # far away -> background
    ])
    crowd = torch.tensor([[[0.0, 0.0, 120.0, 120.0], [300.0, 300.0, 310.0, 310.0]]])
    crowd_mask = torch.tensor([[True, False]])  # the second region is padding
    cls, _, num_pos = AnchorMatcher()(anchors, UNIT_BOX, torch.tensor([[1]]), crowd, crowd_mask)
    assert cls.tolist() == [[1, -2, -1, -1]]
    assert num_pos.tolist() == [1.0]
    cls, _, _ = AnchorMatcher()(anchors, UNIT_BOX, torch.tensor([[1]]), crowd)  # mask omitted: all real
    assert cls.tolist() == [[1, -2, -1, -2]]


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unmatched_threshold"):
        AnchorMatcher(match_threshold=0.4, unmatched_threshold=0.5)
    with pytest.raises(ValueError, match="labels must be"):
        AnchorMatcher()(HAND_ANCHORS, UNIT_BOX, torch.tensor([1]))


_LABELER_SCRIPT = """
from effdet.anchors import Anchors, AnchorLabeler
anchors = Anchors(3, 7, 3, [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)], 4.0, tuple(inputs["size"]))
labeler = AnchorLabeler(anchors, 90, match_threshold=0.5)
# reference: yxyx boxes, classes 1..C, padding -1
boxes = [b[:, [1, 0, 3, 2]] for b in inputs["boxes"]]
classes = [torch.where(l >= 0, l + 1, l) for l in inputs["labels"]]
cls, box, num_pos = labeler.batch_label_anchors(boxes, classes)
batch = len(boxes)
outputs = {
    "cls": torch.cat([c.reshape(batch, -1) for c in cls], 1),
    "box": torch.cat([b.reshape(batch, -1, 4) for b in box], 1),
    "num_pos": num_pos,
}
"""


@pytest.mark.parity
@pytest.mark.slow
@needs_reference
def test_targets_equal_reference_labeler():
    generator = torch.Generator().manual_seed(3)
    size = (512, 384)
    batch, max_boxes = 3, 25
    corner = torch.rand(batch, max_boxes, 2, generator=generator) * torch.tensor([size[1], size[0]]) * 0.9
    extent = torch.rand(batch, max_boxes, 2, generator=generator) ** 2 * 250 + 2  # many small boxes
    boxes = torch.cat([corner, torch.min(corner + extent, torch.tensor([size[1], size[0]]))], dim=-1)
    labels = torch.randint(0, 90, (batch, max_boxes), generator=generator)
    labels[1, 10:] = -1
    labels[2, :] = -1
    labels[2, 0] = 5
    ours = AnchorMatcher()(generate_anchors(size), boxes, labels)
    reference = run_reference(_LABELER_SCRIPT, {"size": size, "boxes": boxes, "labels": labels})
    assert torch.equal(ours[0], reference["cls"])
    assert torch.allclose(ours[1], reference["box"], atol=1e-6, rtol=0)
    assert torch.equal(ours[2], reference["num_pos"])


def test_training_recipes_use_the_official_matcher_without_ignore_band():
    """The schema default (every recipe that does not set loss.unmatched_threshold) is the paper's/official 0.5 / 0.5
    matcher, as the reference's (a 0.4 band measured no better overall: docs/convergence.md)."""
    from pathlib import Path

    from effdet.engine.schema import load_train_config

    root = Path(__file__).resolve().parents[2]
    for config in ["demo.yaml", "finetune.yaml", "coco/efficientdet_d0.yaml"]:
        # (model.pretrained_backbone=null: the COCO recipes name ImageNet backbones that validation asks to download)
        cfg = load_train_config(str(root / "configs" / config), ["data.root=x", "model.pretrained_backbone=null"])
        assert (cfg.loss.match_threshold, cfg.loss.unmatched_threshold) == (0.5, 0.5), config
