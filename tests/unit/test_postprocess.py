import math
from typing import List

import pytest
import torch
from torchvision.ops import batched_nms, box_iou

from effdet.ops.box_coder import BoxCoder
from effdet.modeling.anchors import feature_sizes, flatten_outputs, generate_anchors
from effdet.benchmark.postprocess import benchmark_postprocess
from effdet.ops.boxes import flip_boxes_horizontal
from effdet.ops.nms import (
    _hard_nms_top,
    merge_detections,
    postprocess,
    scale_boxes_to_original,
    soft_nms,
    topk_logits,
)

from tests.helpers.parity import needs_reference, run_reference  # tests/helpers/parity.py

SIZE = (64, 96)
NUM_CLASSES = 5


def _constant_outputs(batch=1, size=SIZE, num_classes=NUM_CLASSES, logit=-10.0):
    sizes = feature_sizes(size, 3, 7)
    cls = [torch.full((batch, 9 * num_classes, h, w), logit) for h, w in sizes]
    box = [torch.zeros(batch, 36, h, w) for h, w in sizes]
    return cls, box


def _set_anchor(cls_outputs, box_outputs, image, anchor, cls, logit, codes, num_classes=NUM_CLASSES):
    """Write one anchor's class logit and box codes into the per-level outputs (anchor in flat order)."""
    offset = 0
    for cls_level, box_level in zip(cls_outputs, box_outputs):
        _, _, h, w = cls_level.shape
        if anchor < offset + h * w * 9:
            local = anchor - offset
            a, position = local % 9, local // 9
            y, x = position // w, position % w
            cls_level[image, a * num_classes + cls, y, x] = logit
            box_level[image, a * 4:(a + 1) * 4, y, x] = torch.as_tensor(codes)
            return
        offset += h * w * 9
    raise IndexError(anchor)


def _distinct_outputs(batch, size, num_classes, seed, num_confident=None):
    """Random outputs whose logits are all different (no ties, so orders are unique).

    Logits are spread over [-8, 0); with ``num_confident`` only about that many stay there and the
    rest move to [-16, -9.2) (score < 1e-4), like a trained detector.
    """
    generator = torch.Generator().manual_seed(seed)
    sizes = feature_sizes(size, 3, 7)
    total = sum(batch * 9 * num_classes * h * w for h, w in sizes)
    uniform = torch.randperm(total, generator=generator).double() / total
    values = (uniform * 8 - 8).float()
    if num_confident is not None:
        values = torch.where(uniform < 1 - num_confident / total, (uniform * 6.8 - 16).float(), values)
    assert values.unique().numel() == total, "float32 rounding made equal logits"
    cls, offset = [], 0
    for h, w in sizes:
        count = batch * 9 * num_classes * h * w
        cls.append(values[offset:offset + count].view(batch, 9 * num_classes, h, w))
        offset += count
    box = [torch.randn(batch, 36, h, w, generator=generator) * 0.5 for h, w in sizes]
    return cls, box


def test_single_confident_anchor_gives_its_decoded_box():
    cls, box = _constant_outputs(batch=2)
    anchors = generate_anchors(SIZE)
    anchor_index, codes = 700, [0.1, -0.2, 0.3, -0.1]
    _set_anchor(cls, box, image=1, anchor=anchor_index, cls=3, logit=5.0, codes=codes)
    dets = postprocess(cls, box, anchors)
    assert len(dets) == 2
    assert dets[0]["boxes"].shape == (0, 4)  # sigmoid(-10) < 0.001: nothing in image 0
    assert dets[1]["labels"].tolist() == [3]
    assert dets[1]["labels"].dtype == torch.int64
    expected = BoxCoder().decode(torch.tensor([codes]), anchors[anchor_index:anchor_index + 1])
    assert torch.allclose(dets[1]["boxes"], expected)
    assert torch.allclose(dets[1]["scores"], torch.sigmoid(torch.tensor([5.0])))


def test_boxes_are_clipped_to_image_size():
    cls, box = _constant_outputs()
    anchors = generate_anchors(SIZE)
    _set_anchor(cls, box, 0, 0, 0, 4.0, [0.0, 0.0, 0.0, 0.0])  # anchor 0 is [-12, -12, 20, 20]
    unclipped = postprocess(cls, box, anchors)[0]["boxes"]
    assert torch.allclose(unclipped, torch.tensor([[-12.0, -12.0, 20.0, 20.0]]))
    clipped = postprocess(cls, box, anchors, image_sizes=[(15.0, 18.0)])[0]["boxes"]
    assert torch.allclose(clipped, torch.tensor([[0.0, 0.0, 18.0, 15.0]]))
    with pytest.raises(ValueError, match="image sizes"):
        postprocess(cls, box, anchors, image_sizes=[(1, 1), (1, 1)])


def test_hard_nms_suppresses_overlaps_of_the_same_class_only():
    cls, box = _constant_outputs()
    anchors = generate_anchors(SIZE)
    # 32x32 anchors 0 (centre (4, 4)) and 9 (next location, 8 px right) overlap with IoU 24/40 = 0.6
    _set_anchor(cls, box, 0, 0, 1, 4.0, [0.0, 0.0, 0.0, 0.0])
    _set_anchor(cls, box, 0, 9, 1, 3.0, [0.0, 0.0, 0.0, 0.0])
    _set_anchor(cls, box, 0, 18, 2, 2.0, [0.0, -0.25, 0.0, 0.0])  # two locations right, moved back: other class
    dets = postprocess(cls, box, anchors)[0]
    assert dets["labels"].tolist() == [1, 2]
    assert torch.allclose(dets["scores"], torch.sigmoid(torch.tensor([4.0, 2.0])))
    soft = postprocess(cls, box, anchors, nms_method="soft")[0]
    # Gaussian soft-NMS keeps the overlapped box with a lower score
    assert soft["labels"].tolist() == [1, 2, 1]
    iou = 24 * 32 / (32 * 40)
    decayed = torch.sigmoid(torch.tensor(3.0)) * math.exp(-iou ** 2 / 0.5)
    assert torch.allclose(soft["scores"][2], decayed)
    with pytest.raises(ValueError, match="nms method"):
        postprocess(cls, box, anchors, nms_method="linear")


def test_max_detections_and_score_threshold():
    cls, box = _constant_outputs(logit=-5.0)  # sigmoid(-5) = 0.0067 > 0.001
    anchors = generate_anchors(SIZE)
    dets = postprocess(cls, box, anchors, max_detections=7)[0]
    assert len(dets["scores"]) == 7
    assert postprocess(cls, box, anchors, score_threshold=0.01)[0]["scores"].numel() == 0


def test_soft_nms_hand_made():
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 10.0],
        [0.0, 0.0, 10.0, 20.0],   # IoU 0.5 with box 0
        [0.0, 0.0, 10.0, 10.0],   # same as box 0, other class
        [50.0, 50.0, 60.0, 60.0],  # disjoint
        [0.0, 0.0, 10.0, 10.0],   # duplicate of box 0 with a low score: decays below the threshold
    ])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.0015])
    classes = torch.tensor([0, 0, 1, 0, 0])
    keep, rescored = soft_nms(boxes, scores, classes, sigma=0.5, score_threshold=0.001)
    decayed = 0.8 * math.exp(-0.25 / 0.5)  # 0.485
    assert keep.tolist() == [0, 2, 3, 1]
    assert torch.allclose(rescored, torch.tensor([0.9, 0.7, 0.6, decayed]))
    # stopping early gives the head of the full result
    keep2, rescored2 = soft_nms(boxes, scores, classes, max_detections=2)
    assert keep2.tolist() == [0, 2] and torch.allclose(rescored2, rescored[:2])
    empty_keep, empty_scores = soft_nms(boxes[:0], scores[:0], classes[:0])
    assert empty_keep.numel() == 0 and empty_scores.numel() == 0


def _naive_soft_nms(boxes, scores, classes, sigma, threshold):
    """The textbook loop over all boxes (one selection per iteration, classes kept apart)."""
    remaining = list(range(len(scores)))
    current = scores.clone()
    picked, picked_scores = [], []
    while remaining:
        best = max(remaining, key=lambda i: (current[i].item(), -i))
        if current[best] <= threshold:
            break
        picked.append(best)
        picked_scores.append(current[best].item())
        remaining.remove(best)
        for i in remaining:
            if classes[i] == classes[best]:
                iou = box_iou(boxes[best:best + 1], boxes[i:i + 1])[0, 0].item()
                current[i] *= math.exp(-iou * iou / sigma)
        remaining = [i for i in remaining if current[i] > threshold]
    return picked, picked_scores


@pytest.mark.parametrize("num_classes", [1, 4])
def test_soft_nms_equals_textbook_loop(num_classes):
    generator = torch.Generator().manual_seed(num_classes)
    corner = torch.rand(120, 2, generator=generator) * 60
    boxes = torch.cat([corner, corner + torch.rand(120, 2, generator=generator) * 30 + 5], dim=1)
    scores = torch.rand(120, generator=generator) * 0.9 + 0.05
    classes = torch.randint(0, num_classes, (120,), generator=generator) * 7  # sparse class ids
    expected_ids, expected_scores = _naive_soft_nms(boxes, scores, classes, 0.5, 0.05)
    keep, rescored = soft_nms(boxes, scores, classes, sigma=0.5, score_threshold=0.05, max_detections=30)
    assert keep.tolist() == expected_ids[:30]
    assert torch.allclose(rescored, torch.tensor(expected_scores[:30]), rtol=1e-5)


def test_soft_nms_order_is_decreasing_and_matches_unbounded_run():
    generator = torch.Generator().manual_seed(0)
    corner = torch.rand(300, 2, generator=generator) * 100
    boxes = torch.cat([corner, corner + torch.rand(300, 2, generator=generator) * 40 + 5], dim=1)
    scores = torch.rand(300, generator=generator)
    classes = torch.randint(0, 3, (300,), generator=generator)
    keep_all, scores_all = soft_nms(boxes, scores, classes, max_detections=10_000)
    keep, rescored = soft_nms(boxes, scores, classes, max_detections=50)
    assert torch.equal(keep, keep_all[:50]) and torch.equal(rescored, scores_all[:50])
    assert (scores_all[1:] <= scores_all[:-1]).all()
    assert (scores_all > 0.001).all()


def test_hard_nms_prefix_shortcut_equals_full_nms():
    generator = torch.Generator().manual_seed(1)
    corner = torch.rand(3000, 2, generator=generator) * 300
    boxes = torch.cat([corner, corner + torch.rand(3000, 2, generator=generator) * 80 + 5], dim=1)
    scores = torch.rand(3000, generator=generator)
    classes = torch.randint(0, 4, (3000,), generator=generator)
    for max_det in (5, 100, 400):  # 400: the 4000-box prefix covers all, takes the full path
        full = batched_nms(boxes, scores, classes, 0.5)[:max_det]
        assert torch.equal(_hard_nms_top(boxes, scores, classes, 0.5, max_det), full)


@pytest.mark.parametrize("k", [1, 37, 1000, 5000, 30000, 10**7])
def test_fast_topk_equals_torch_topk(k):
    cls, box = _distinct_outputs(batch=2, size=(128, 160), num_classes=20, seed=k % 97)
    flat, _ = flatten_outputs(cls, box, 20)
    flat = flat.reshape(2, -1)
    expected = flat.topk(min(k, flat.shape[1]), dim=1)
    for image, (values, index) in enumerate(topk_logits(cls, 20, k)):
        assert torch.equal(values, expected.values[image])
        assert torch.equal(index, expected.indices[image])


def test_fast_topk_with_min_logit_and_ties():
    cls, box = _distinct_outputs(batch=1, size=(64, 64), num_classes=3, seed=5)
    values, _ = topk_logits(cls, 3, 500, min_logit=-0.01)[0]
    flat, _ = flatten_outputs(cls, box, 3)
    assert torch.equal(values, flat[flat >= -0.01].sort(descending=True).values)
    # all logits equal: any k of them are a correct answer
    cls, _ = _constant_outputs(size=(64, 64), num_classes=3, logit=1.0)
    values, index = topk_logits(cls, 3, 100)[0]
    assert values.shape == (100,) and (values == 1.0).all() and index.unique().numel() == 100


def test_scale_and_flip_boxes():
    boxes = torch.tensor([[10.0, 20.0, 110.0, 220.0], [-5.0, 0.0, 50.0, 900.0]])
    original = scale_boxes_to_original(boxes, scale=0.5, orig_size=(400, 300))
    assert torch.allclose(original, torch.tensor([[20.0, 40.0, 220.0, 400.0], [0.0, 0.0, 100.0, 400.0]]))
    flipped = flip_boxes_horizontal(boxes, width=200.0)
    assert torch.allclose(flipped[0], torch.tensor([90.0, 20.0, 190.0, 220.0]))
    assert torch.allclose(flip_boxes_horizontal(flipped, 200.0), boxes)


def test_merge_detections_runs_per_class_nms_on_the_union():
    view_a = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0]]),
              "scores": torch.tensor([0.9, 0.3]), "labels": torch.tensor([0, 1])}
    view_b = {"boxes": torch.tensor([[1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 10.0, 10.0]]),
              "scores": torch.tensor([0.8, 0.5]), "labels": torch.tensor([0, 2])}
    merged = merge_detections([view_a, view_b])
    assert merged["labels"].tolist() == [0, 2, 1]
    assert torch.allclose(merged["scores"], torch.tensor([0.9, 0.5, 0.3]))
    soft = merge_detections([view_a, view_b], method="soft")
    decayed = 0.8 * math.exp(-((90 / 110) ** 2) / 0.5)  # IoU 90/110 with the 0.9 box -> 0.21
    assert soft["labels"].tolist() == [0, 2, 1, 0]
    assert torch.allclose(soft["scores"], torch.tensor([0.9, 0.5, 0.3, decayed]))
    assert merge_detections([view_a, view_b], max_detections=1)["scores"].tolist() == pytest.approx([0.9])
    with pytest.raises(ValueError, match="at least one"):
        merge_detections([])


def test_benchmark_postprocess_returns_milliseconds():
    ms = benchmark_postprocess(num_classes=10, image_size=128, repeats=2)
    assert isinstance(ms, float) and 0 < ms < 60_000


_BENCH_SCRIPT = """
from effdet.bench import _post_process, _batch_detection
from effdet.anchors import Anchors
h, w = inputs["size"]
anchors = Anchors(3, 7, 3, [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)], 4.0, (h, w))
cls_out, box_out, indices, classes = _post_process(inputs["cls"], inputs["box"], 5, inputs["num_classes"], 5000)
# reference image info: img_size (w, h) of the valid area, img_scale 1 (boxes stay in input pixels)
img_size = torch.tensor([[s[1], s[0]] for s in inputs["image_sizes"]])
img_scale = torch.ones(len(img_size))
outputs = {}
for method in ("hard", "soft"):
    outputs[method] = _batch_detection(len(img_size), cls_out, box_out, anchors.boxes, indices, classes,
                                       img_scale, img_size, 100, method == "soft")
"""


@pytest.mark.parity
@pytest.mark.slow
@needs_reference
def test_detections_equal_reference():
    size, num_classes = (512, 384), 90
    # few confident logits, or the reference's soft-NMS (a python loop over 5000 boxes) takes a minute
    cls, box = _distinct_outputs(batch=2, size=size, num_classes=num_classes, seed=11, num_confident=800)
    image_sizes = [(500.0, 380.0), (300.0, 384.0)]
    reference = run_reference(_BENCH_SCRIPT, {
        "size": size, "cls": cls, "box": box, "num_classes": num_classes, "image_sizes": image_sizes,
    })
    anchors = generate_anchors(size)
    for method, threshold in (("hard", 0.0), ("soft", 0.001)):
        ours: List[dict] = postprocess(cls, box, anchors, nms_method=method, score_threshold=threshold,
                                       image_sizes=image_sizes)
        for image in range(2):
            theirs = reference[method][image]
            theirs = theirs[theirs[:, 4] > 0]  # the reference pads with zero rows
            assert len(ours[image]["scores"]) == len(theirs) == 100
            assert torch.equal(ours[image]["labels"], theirs[:, 5].long() - 1)  # reference classes are 1-based
            assert torch.allclose(ours[image]["boxes"], theirs[:, :4], atol=1e-4, rtol=0)
            assert torch.allclose(ours[image]["scores"], theirs[:, 4], atol=1e-6, rtol=1e-5)
