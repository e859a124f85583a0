import math

import pytest
import torch

from effdet.ops.box_coder import BoxCoder
from effdet.modeling.anchors import feature_sizes, flatten_outputs, generate_anchors

from tests.helpers.parity import needs_reference, run_reference  # tests/helpers/parity.py


def test_feature_sizes_ceil_halving():
    assert feature_sizes((512, 512), 3, 7) == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
    assert feature_sizes((320, 320), 3, 7) == [(40, 40), (20, 20), (10, 10), (5, 5), (3, 3)]
    assert feature_sizes((600, 1000), 3, 5) == [(75, 125), (38, 63), (19, 32)]
    with pytest.raises(ValueError, match="min_level"):
        feature_sizes((512, 512), 5, 3)


def test_d0_anchor_count_and_first_anchors():
    anchors = generate_anchors((512, 512))
    assert anchors.shape == (49104, 4)
    assert anchors.dtype == torch.float32
    # First location of P3 (stride 8): centre (4, 4); scale 2^0 aspect (1, 1) -> 32x32.
    assert torch.allclose(anchors[0], torch.tensor([-12.0, -12.0, 20.0, 20.0]))
    # aspect (1.4, 0.7): 44.8 wide, 22.4 high
    assert torch.allclose(anchors[1], torch.tensor([4 - 22.4, 4 - 11.2, 4 + 22.4, 4 + 11.2]))
    # octave 1 (2^(1/3)), aspect (1, 1)
    side = 32 * 2 ** (1 / 3)
    assert torch.allclose(anchors[3], torch.tensor([4 - side / 2, 4 - side / 2, 4 + side / 2, 4 + side / 2]))


def test_anchor_order_level_y_x_anchor():
    anchors = generate_anchors((512, 512))
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    # The next location along x comes after the 9 anchors of the first one.
    assert torch.allclose(centres[9], torch.tensor([12.0, 4.0]))
    # The first anchor of the second row (y) follows the 64 locations of the first row.
    assert torch.allclose(centres[64 * 9], torch.tensor([4.0, 12.0]))
    # P4 starts after the 64*64*9 anchors of P3: stride 16, size 4*16 = 64.
    p4 = anchors[64 * 64 * 9]
    assert torch.allclose(p4, torch.tensor([8.0 - 32, 8.0 - 32, 8.0 + 32, 8.0 + 32]))
    # The last anchor is at the last P7 location (stride 128, centre 448) with octave 2, aspect (0.7, 1.4).
    base = 4 * 128 * 2 ** (2 / 3)
    half_w, half_h = base * 0.7 / 2, base * 1.4 / 2
    assert torch.allclose(anchors[-1], torch.tensor([448 - half_w, 448 - half_h, 448 + half_w, 448 + half_h]))


def test_non_divisible_size_uses_input_over_feature_stride():
    anchors = generate_anchors((320, 320), anchor_scale=3.0)
    assert anchors.shape[0] == 9 * (40 * 40 + 20 * 20 + 10 * 10 + 5 * 5 + 3 * 3)
    # P7 has 3x3 locations, stride 320/3; the last centre is 320/3 * 2.5.
    centre = (anchors[-1, :2] + anchors[-1, 2:]) / 2
    assert torch.allclose(centre, torch.tensor([320 / 3 * 2.5] * 2))


def test_scalar_aspect_ratio_and_per_level_scale():
    anchors = generate_anchors((64, 64), min_level=3, max_level=4, num_scales=1, aspect_ratios=(2.0,),
                               anchor_scale=(1.0, 2.0))
    first = anchors[0]
    width, height = first[2] - first[0], first[3] - first[1]
    assert math.isclose(width.item(), 8 * math.sqrt(2), rel_tol=1e-6)
    assert math.isclose(height.item(), 8 / math.sqrt(2), rel_tol=1e-6)
    p4_first = anchors[8 * 8]
    assert math.isclose((p4_first[2] - p4_first[0]).item(), 2.0 * 16 * math.sqrt(2), rel_tol=1e-6)
    with pytest.raises(ValueError, match="one value per level"):
        generate_anchors((64, 64), min_level=3, max_level=4, anchor_scale=(1.0, 2.0, 3.0))


def test_anchors_are_cached_and_follow_dtype():
    assert generate_anchors(512) is generate_anchors((512, 512))
    assert generate_anchors(512, dtype=torch.float64).dtype == torch.float64


def test_box_coder_round_trip_and_known_codes():
    coder = BoxCoder()
    anchors = torch.tensor([[0.0, 0.0, 10.0, 20.0], [100.0, 50.0, 140.0, 70.0]])
    boxes = torch.tensor([[1.0, 2.0, 9.0, 30.0], [90.0, 40.0, 150.0, 90.0]])
    codes = coder.encode(boxes, anchors)
    # (ty, tx, th, tw) for the first pair: centre (5, 16) vs (5, 10), size 8x28 vs 10x20
    expected = torch.tensor([6 / 20, 0.0, math.log(28 / 20), math.log(8 / 10)])
    assert torch.allclose(codes[0], expected, atol=1e-6)
    assert torch.allclose(coder.decode(codes, anchors), boxes, atol=1e-4)
    # broadcasting over a batch dimension
    batch_codes = coder.encode(boxes.expand(3, 2, 4), anchors)
    assert batch_codes.shape == (3, 2, 4)
    assert torch.allclose(batch_codes[2], codes)


def test_box_coder_degenerate_box_stays_finite():
    codes = BoxCoder().encode(torch.tensor([[5.0, 5.0, 5.0, 5.0]]), torch.tensor([[0.0, 0.0, 10.0, 10.0]]))
    assert torch.isfinite(codes).all()


def test_flatten_outputs_anchor_major_layout():
    batch, num_classes, num_anchors = 2, 3, 9
    cls_level = torch.arange(batch * num_anchors * num_classes * 2 * 2, dtype=torch.float32)
    cls_level = cls_level.view(batch, num_anchors * num_classes, 2, 2)
    box_level = torch.randn(batch, num_anchors * 4, 2, 2)
    cls_small = torch.randn(batch, num_anchors * num_classes, 1, 1)
    box_small = torch.randn(batch, num_anchors * 4, 1, 1)
    cls, box = flatten_outputs([cls_level, cls_small], [box_level, box_small], num_classes)
    assert cls.shape == (batch, (4 + 1) * num_anchors, num_classes)
    assert box.shape == (batch, (4 + 1) * num_anchors, 4)
    # anchor index n = (y * W + x) * A + a; class logit at channel a*C + c
    b, y, x, a, c = 1, 1, 0, 5, 2
    n = (y * 2 + x) * num_anchors + a
    assert cls[b, n, c] == cls_level[b, a * num_classes + c, y, x]
    assert torch.equal(box[b, n], box_level[b, a * 4:(a + 1) * 4, y, x])
    assert torch.equal(cls[b, 4 * num_anchors + a], cls_small[b, a * num_classes:(a + 1) * num_classes, 0, 0])


_ANCHORS_SCRIPT = """
from effdet.anchors import Anchors
outputs = {}
for key, (h, w, scale) in inputs.items():
    outputs[key] = Anchors(3, 7, 3, [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)], scale, (h, w)).boxes
"""


@pytest.mark.parity
@pytest.mark.slow
@needs_reference
def test_anchors_equal_reference():
    cases = {"d0": (512, 512, 4.0), "lite0": (320, 320, 3.0), "rect": (384, 640, 4.0)}
    reference = run_reference(_ANCHORS_SCRIPT, cases)
    for key, (h, w, scale) in cases.items():
        ours = generate_anchors((h, w), anchor_scale=scale)
        theirs_yxyx = reference[key]
        theirs = theirs_yxyx[:, [1, 0, 3, 2]]
        assert ours.shape == theirs.shape, key
        assert torch.allclose(ours, theirs, atol=1e-4, rtol=0), key


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_box_coder_computes_in_float32_for_half_precision_inputs(dtype):
    """Under fp16/bf16 autocast the coder may receive half-precision boxes: a zero-width box must still encode to
    finite codes (its eps-sized width would underflow to 0 and give log(0) = -inf), large codes must decode
    without overflow, and the results equal the float32 computation."""
    from effdet.ops.box_coder import BoxCoder

    coder = BoxCoder()
    anchors = torch.tensor([[10.0, 10.0, 42.0, 42.0], [0.0, 0.0, 256.0, 256.0]])
    boxes = torch.tensor([[20.0, 12.0, 20.0, 40.0], [8.0, 8.0, 200.0, 120.0]])  # the first has zero width
    codes = coder.encode(boxes.to(dtype), anchors.to(dtype))
    assert codes.dtype == torch.float32 and bool(torch.isfinite(codes).all())
    expected = coder.encode(boxes.to(dtype).float(), anchors.to(dtype).float())
    assert torch.equal(codes, expected)
    big = torch.tensor([[0.0, 0.0, 12.0, 12.0]])  # exp(12) * 256 overflows float16 (max 65504)
    decoded = coder.decode(big.to(dtype), anchors[1:].to(dtype))
    assert decoded.dtype == torch.float32 and bool(torch.isfinite(decoded).all())
    assert torch.allclose(decoded, coder.decode(big, anchors[1:]), rtol=1e-2)
