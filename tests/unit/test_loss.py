import math

import pytest
import torch
import torch.nn.functional as F

from effdet.ops.box_coder import BoxCoder
from effdet.modeling.anchors import feature_sizes, flatten_outputs, generate_anchors
from effdet.modeling.assign import AnchorMatcher
from effdet.modeling.loss import DetectionLoss, _LevelFocalSum, focal_loss, giou_loss, huber_loss

from tests.helpers.parity import needs_reference, run_reference  # tests/helpers/parity.py

NUM_CLASSES = 4


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_focal_loss_hand_computed():
    logits = torch.tensor([0.0, 2.0, -1.0])
    targets = torch.tensor([1.0, 0.0, 1.0])
    loss = focal_loss(logits, targets, alpha=0.25, gamma=1.5)
    # positive at logit 0: 0.25 * 0.5^1.5 * log 2
    expected0 = 0.25 * 0.5 ** 1.5 * math.log(2.0)
    # negative at logit 2: 0.75 * p^1.5 * softplus(2), p = sigmoid(2)
    p = 1 / (1 + math.exp(-2.0))
    expected1 = 0.75 * p ** 1.5 * _softplus(2.0)
    # positive at logit -1: 0.25 * (1 - sigmoid(-1))^1.5 * softplus(1)
    q = 1 / (1 + math.exp(1.0))
    expected2 = 0.25 * (1 - q) ** 1.5 * _softplus(1.0)
    assert torch.allclose(loss, torch.tensor([expected0, expected1, expected2]), rtol=1e-6)


def test_focal_loss_label_smoothing_only_changes_cross_entropy():
    logits = torch.tensor([0.5, -0.5])
    targets = torch.tensor([1.0, 0.0])
    smoothing = 0.1
    loss = focal_loss(logits, targets, label_smoothing=smoothing)
    p = torch.sigmoid(logits)
    modulating = torch.stack([(1 - p[0]) ** 1.5, p[1] ** 1.5])
    alpha = torch.tensor([0.25, 0.75])
    smoothed = torch.tensor([1 - smoothing / 2, smoothing / 2])
    ce = F.binary_cross_entropy_with_logits(logits, smoothed, reduction="none")
    assert torch.allclose(loss, alpha * modulating * ce, rtol=1e-6)


def test_huber_loss_quadratic_then_linear():
    target = torch.zeros(4)
    pred = torch.tensor([0.05, -0.05, 0.3, -1.1])
    expected = torch.tensor([0.5 * 0.05 ** 2, 0.5 * 0.05 ** 2, 0.1 * (0.3 - 0.05), 0.1 * (1.1 - 0.05)])
    assert torch.allclose(huber_loss(pred, target, delta=0.1), expected, rtol=1e-6)


def test_giou_loss_values():
    box = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    assert torch.allclose(giou_loss(box, box), torch.zeros(1))
    far = torch.tensor([[20.0, 0.0, 30.0, 10.0]])  # IoU 0, hull 30x10 -> GIoU = -(300-200)/300
    assert torch.allclose(giou_loss(box, far), torch.tensor([1 + 1 / 3]))
    assert giou_loss(box.expand(2, 3, 4), box.expand(2, 3, 4)).shape == (2, 3)


def _tiny_outputs(batch=2, size=(16, 16), num_classes=NUM_CLASSES, seed=0):
    generator = torch.Generator().manual_seed(seed)
    sizes = feature_sizes(size, 3, 4)
    cls = [torch.randn(batch, 9 * num_classes, h, w, generator=generator) for h, w in sizes]
    box = [torch.randn(batch, 36, h, w, generator=generator) * 0.2 for h, w in sizes]
    return cls, box


def _reference_formula(cls_out, box_out, cls_targets, box_targets, num_pos, num_classes, smoothing=0.0):
    """Direct translation of the documented normalisation with a materialised one-hot."""
    logits, codes = flatten_outputs(cls_out, box_out, num_classes)
    one_hot = F.one_hot(cls_targets.clamp(min=0), num_classes).float() * (cls_targets >= 0)[..., None]
    normalizer = num_pos.sum() + 1
    per_element = focal_loss(logits, one_hot, label_smoothing=smoothing) * (cls_targets != -2)[..., None]
    class_loss = per_element.sum() / normalizer
    box_loss = (huber_loss(codes, box_targets, 0.1) * (box_targets != 0)).sum() / (4 * normalizer)
    return class_loss, box_loss


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_detection_loss_matches_one_hot_formula(smoothing):
    cls_out, box_out = _tiny_outputs()
    anchors = generate_anchors((16, 16), max_level=4)
    num_anchors = anchors.shape[0]
    cls_targets = torch.randint(-2, NUM_CLASSES, (2, num_anchors))
    box_targets = torch.randn(2, num_anchors, 4) * (cls_targets >= 0)[..., None]
    num_pos = (cls_targets >= 0).sum(1).float()
    out = DetectionLoss(NUM_CLASSES, label_smoothing=smoothing)(cls_out, box_out, cls_targets, box_targets, num_pos)
    class_loss, box_loss = _reference_formula(
        cls_out, box_out, cls_targets, box_targets, num_pos, NUM_CLASSES, smoothing
    )
    assert torch.allclose(out["class_loss"], class_loss, rtol=1e-5)
    assert torch.allclose(out["box_loss"], box_loss, rtol=1e-5)
    assert torch.allclose(out["loss"], class_loss + 50.0 * box_loss, rtol=1e-5)


def test_ignored_anchors_have_no_class_loss_and_background_is_all_zero_target():
    cls_out, box_out = _tiny_outputs(batch=1)
    num_anchors = generate_anchors((16, 16), max_level=4).shape[0]
    cls_targets = torch.full((1, num_anchors), -1)
    cls_targets[0, 0] = -2
    box_targets = torch.zeros(1, num_anchors, 4)
    num_pos = torch.zeros(1)
    loss_fn = DetectionLoss(NUM_CLASSES)
    base = loss_fn(cls_out, box_out, cls_targets, box_targets, num_pos)["class_loss"]
    # changing the logits of the ignored anchor (anchor 0 = channels 0..C-1 at P3 (0, 0)) changes nothing
    changed = [c.clone() for c in cls_out]
    changed[0][0, :NUM_CLASSES, 0, 0] += 5.0
    assert torch.equal(loss_fn(changed, box_out, cls_targets, box_targets, num_pos)["class_loss"], base)
    # background: every class logit of an anchor is pushed down (target 0)
    logits, _ = flatten_outputs(cls_out, box_out, NUM_CLASSES)
    expected = (focal_loss(logits[0, 1:], torch.zeros_like(logits[0, 1:]))).sum()
    assert torch.allclose(base, expected, rtol=1e-5)


def test_zero_positives_is_finite_and_has_no_box_loss():
    cls_out, box_out = _tiny_outputs()
    num_anchors = generate_anchors((16, 16), max_level=4).shape[0]
    out = DetectionLoss(NUM_CLASSES)(
        cls_out, box_out, torch.full((2, num_anchors), -1), torch.zeros(2, num_anchors, 4), torch.zeros(2)
    )
    assert torch.isfinite(out["loss"])
    assert out["box_loss"].item() == 0.0
    assert out["class_loss"].item() > 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("box_loss", ["huber", "giou"])
def test_gradients_and_float32_under_autocast(dtype, box_loss):
    """Under bf16 and fp16 autocast (the network's outputs in half precision), the matcher's targets and every loss
    term are float32, and the gradients reaching the half-precision outputs are finite."""
    cls_out, box_out = _tiny_outputs()
    cls_out = [c.to(dtype).requires_grad_() for c in cls_out]
    box_out = [b.to(dtype).requires_grad_() for b in box_out]
    anchors = generate_anchors((16, 16), max_level=4)
    boxes = torch.tensor([[[1.0, 1.0, 9.0, 12.0]], [[4.0, 4.0, 16.0, 16.0]]])
    with torch.autocast("cpu", dtype=dtype):
        targets = AnchorMatcher()(anchors, boxes, torch.tensor([[1], [3]]))
        out = DetectionLoss(NUM_CLASSES, box_loss_type=box_loss)(cls_out, box_out, *targets, anchors)
    assert targets[1].dtype == torch.float32  # box targets (class targets are integer labels)
    assert not targets[0].is_floating_point() or targets[0].dtype == torch.float32
    assert {name: value.dtype for name, value in out.items()} == {name: torch.float32 for name in out}
    out["loss"].backward()
    assert cls_out[0].grad is not None and torch.isfinite(cls_out[0].grad.float()).all()
    assert box_out[0].grad.abs().sum() > 0 and torch.isfinite(box_out[0].grad.float()).all()


def test_giou_box_loss():
    anchors = generate_anchors((16, 16), max_level=4)
    cls_out, box_out = _tiny_outputs(batch=1)
    boxes = torch.tensor([[[1.0, 1.0, 9.0, 12.0]]])
    cls_targets, box_targets, num_pos = AnchorMatcher()(anchors, boxes, torch.tensor([[2]]))
    loss_fn = DetectionLoss(NUM_CLASSES, box_loss_type="giou")
    assert loss_fn.box_loss_weight == 1.0
    with pytest.raises(ValueError, match="needs the anchors"):
        loss_fn(cls_out, box_out, cls_targets, box_targets, num_pos)
    out = loss_fn(cls_out, box_out, cls_targets, box_targets, num_pos, anchors=anchors)
    positive = (cls_targets[0] >= 0).nonzero()[:, 0]
    _, codes = flatten_outputs(cls_out, box_out, NUM_CLASSES)
    coder = BoxCoder()
    pred = coder.decode(codes[0, positive], anchors[positive])
    target = boxes[0, 0].expand(len(positive), 4)
    expected = giou_loss(pred, target).sum() / (num_pos.sum() + 1)
    assert torch.allclose(out["box_loss"], expected, rtol=1e-4)
    # perfect box predictions: zero box loss
    perfect = [torch.zeros_like(b) for b in box_out]
    flat_targets = box_targets.clone()
    offset = 0
    for level in perfect:
        _, _, h, w = level.shape
        count = h * w * 9
        level.copy_(flat_targets[:, offset:offset + count].reshape(1, h, w, 36).permute(0, 3, 1, 2))
        offset += count
    zero = loss_fn(cls_out, perfect, cls_targets, box_targets, num_pos, anchors=anchors)["box_loss"]
    assert zero.abs().item() < 1e-5


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_hand_written_focal_gradient_passes_gradcheck(smoothing):
    generator = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 2, 3, 2, 2, generator=generator, dtype=torch.float64) * 3).requires_grad_()
    keep = (torch.rand(2, 2, 1, 2, 2, generator=generator) > 0.3).double()
    positives = torch.tensor([[0, 1, 1], [0, 1, 1], [1, 2, 0], [0, 1, 1], [1, 0, 1]])  # (b, a, c, y, x) per column
    keep[positives[0], positives[1], 0, positives[3], positives[4]] = 1.0  # positives are never ignored
    target_class = torch.full((2, 2, 1, 2, 2), -1, dtype=torch.long)  # the class of each positive anchor
    target_class[positives[0], positives[1], 0, positives[3], positives[4]] = positives[2]
    assert torch.autograd.gradcheck(
        lambda x: _LevelFocalSum.apply(x, keep, target_class, 0.25, 1.5, smoothing), (logits,)
    )


def test_gradient_equals_autograd_of_one_hot_formula():
    cls_out, box_out = _tiny_outputs()
    cls_out = [c.requires_grad_() for c in cls_out]
    num_anchors = generate_anchors((16, 16), max_level=4).shape[0]
    cls_targets = torch.randint(-2, NUM_CLASSES, (2, num_anchors), generator=torch.Generator().manual_seed(4))
    box_targets = torch.zeros(2, num_anchors, 4)
    num_pos = (cls_targets >= 0).sum(1).float()
    ours = torch.autograd.grad(
        DetectionLoss(NUM_CLASSES, label_smoothing=0.1)(cls_out, box_out, cls_targets, box_targets, num_pos)["loss"],
        cls_out,
    )
    class_loss, _ = _reference_formula(cls_out, box_out, cls_targets, box_targets, num_pos, NUM_CLASSES, 0.1)
    expected = torch.autograd.grad(class_loss, cls_out)
    for mine, theirs in zip(ours, expected):
        assert torch.allclose(mine, theirs, rtol=1e-4, atol=1e-7)


def test_rejects_unknown_box_loss_and_mismatched_targets():
    with pytest.raises(ValueError, match="box_loss_type"):
        DetectionLoss(NUM_CLASSES, box_loss_type="l1")
    cls_out, box_out = _tiny_outputs()
    with pytest.raises(ValueError, match="another image size"):
        DetectionLoss(NUM_CLASSES)(cls_out, box_out, torch.full((2, 10), -1), torch.zeros(2, 10, 4), torch.zeros(2))


def test_no_grad_gives_the_same_value():
    cls_out, box_out = _tiny_outputs()
    anchors = generate_anchors((16, 16), max_level=4)
    targets = AnchorMatcher()(anchors, torch.tensor([[[1.0, 1.0, 9.0, 12.0]]] * 2), torch.tensor([[1], [3]]))
    loss_fn = DetectionLoss(NUM_CLASSES)
    with torch.no_grad():
        value = loss_fn(cls_out, box_out, *targets)["loss"]
    cls_req = [c.clone().requires_grad_() for c in cls_out]
    assert torch.equal(value, loss_fn(cls_req, box_out, *targets)["loss"].detach())


_LOSS_SCRIPT = """
from types import SimpleNamespace
from effdet.loss import DetectionLoss
from effdet.anchors import get_feat_sizes
outputs = {}
sizes = get_feat_sizes(tuple(inputs["size"]), 7)[3:]
batch = inputs["cls_targets"].shape[0]
cls_targets, box_targets, offset = [], [], 0
for h, w in sizes:
    count = h * w * 9
    cls_targets.append(inputs["cls_targets"][:, offset:offset + count].reshape(batch, h, w, 9))
    box_targets.append(inputs["box_targets"][:, offset:offset + count].reshape(batch, h, w, 36))
    offset += count
for smoothing in (0.0, 0.1):
    config = SimpleNamespace(num_classes=90, alpha=0.25, gamma=1.5, delta=0.1, box_loss_weight=50.0,
                             label_smoothing=smoothing, legacy_focal=False, jit_loss=False)
    cls_out = [c.clone().requires_grad_() for c in inputs["cls_out"]]
    box_out = [b.clone().requires_grad_() for b in inputs["box_out"]]
    loss, class_loss, box_loss = DetectionLoss(config)(cls_out, box_out, cls_targets, box_targets, inputs["num_pos"])
    loss.backward()
    outputs[smoothing] = (torch.stack([loss, class_loss, box_loss]).detach(),
                          [c.grad for c in cls_out], [b.grad for b in box_out])
"""


@pytest.mark.parity
@pytest.mark.slow
@needs_reference
def test_loss_equals_reference():
    size = (256, 320)
    generator = torch.Generator().manual_seed(1)
    sizes = feature_sizes(size, 3, 7)
    cls_out = [torch.randn(2, 9 * 90, h, w, generator=generator) * 1.5 - 3.0 for h, w in sizes]
    box_out = [torch.randn(2, 36, h, w, generator=generator) * 0.3 for h, w in sizes]
    anchors = generate_anchors(size)
    corner = torch.rand(2, 12, 2, generator=generator) * 200
    boxes = torch.cat([corner, corner + torch.rand(2, 12, 2, generator=generator) * 100 + 8], dim=-1)
    labels = torch.randint(0, 90, (2, 12), generator=generator)
    labels[1, 6:] = -1
    # the 0.4 band produces ignored (-2) anchors, which the reference loss also skips
    cls_targets, box_targets, num_pos = AnchorMatcher(0.5, 0.4)(anchors, boxes, labels)
    assert (cls_targets == -2).any()
    reference = run_reference(_LOSS_SCRIPT, {
        "size": size, "cls_out": cls_out, "box_out": box_out, "cls_targets": cls_targets,
        "box_targets": box_targets, "num_pos": num_pos,
    })
    for smoothing in (0.0, 0.1):
        cls_req = [c.clone().requires_grad_() for c in cls_out]
        box_req = [b.clone().requires_grad_() for b in box_out]
        out = DetectionLoss(90, label_smoothing=smoothing)(cls_req, box_req, cls_targets, box_targets, num_pos)
        out["loss"].backward()
        ours = torch.stack([out["loss"], out["class_loss"], out["box_loss"]]).detach()
        values, cls_grads, box_grads = reference[smoothing]
        assert torch.allclose(ours, values, rtol=1e-5, atol=0), (smoothing, ours, values)
        for mine, theirs in zip(cls_req, cls_grads):
            assert torch.allclose(mine.grad, theirs, rtol=1e-4, atol=1e-9)
        for mine, theirs in zip(box_req, box_grads):
            assert torch.allclose(mine.grad, theirs, rtol=1e-4, atol=1e-9)


def test_giou_loss_equals_torchvision():
    """Our sync-free GIoU loss against torchvision's generalized_box_iou_loss, overlapping and disjoint pairs."""
    from torchvision.ops import generalized_box_iou_loss

    from effdet.ops.boxes import giou_loss

    generator = torch.Generator().manual_seed(3)
    corners = torch.rand(200, 2, 2, generator=generator) * 50
    sizes = torch.rand(200, 2, 2, generator=generator) * 30 + 0.5
    pred, target = torch.cat([corners[:, 0], corners[:, 0] + sizes[:, 0]], 1), torch.cat(
        [corners[:, 1], corners[:, 1] + sizes[:, 1]], 1)
    expected = generalized_box_iou_loss(pred, target, reduction="none")
    assert bool((expected > 1).any()) and bool((expected < 1).any())  # disjoint and overlapping pairs
    assert torch.allclose(giou_loss(pred, target), expected, atol=1e-6)
