"""Property-based tests (hypothesis): the training transforms keep every box inside the image with its label;
letterbox then restore maps boxes back within 1 px."""
from __future__ import annotations

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from effdet.data import DetectionSample, Letterbox, train_transforms
from effdet.ops.nms import scale_boxes_to_original

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def samples(draw) -> DetectionSample:
    """A random RGB image (1..300 px a side) with 0..8 valid boxes (inside it, sides >= 1 px); label i = box i."""
    height, width = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    boxes = []
    for _ in range(draw(st.integers(0, 8))):
        x1 = draw(st.floats(0, width - 1, allow_nan=False))
        y1 = draw(st.floats(0, height - 1, allow_nan=False))
        x2 = draw(st.floats(x1 + 1, width, allow_nan=False))
        y2 = draw(st.floats(y1 + 1, height, allow_nan=False))
        boxes.append([x1, y1, x2, y2])
    seed = draw(st.integers(0, 2**31 - 1))
    image = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return DetectionSample(image=image, boxes=np.array(boxes, np.float32).reshape(-1, 4),
                           labels=np.arange(len(boxes), dtype=np.int64), crowd_boxes=np.zeros((0, 4), np.float32))


@SETTINGS
@given(sample=samples(), size=st.sampled_from([32, 64, 96]), seed=st.integers(0, 2**31 - 1),
       low=st.floats(0.1, 1.0), spread=st.floats(0.0, 1.5))
def test_training_transforms_keep_boxes_inside_the_image_with_their_labels(sample, size, seed, low, spread):
    torch.manual_seed(seed)  # the transforms draw from torch's generator
    out = train_transforms(size, scale_range=(low, low + spread))(sample)
    assert tuple(out.image.shape) == (3, size, size)
    boxes, labels = out.boxes.numpy().astype(np.float64), out.labels.numpy()
    assert len(boxes) == len(labels)
    assert ((boxes >= 0) & (boxes <= size)).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert len(set(labels.tolist())) == len(labels) and set(labels.tolist()) <= set(sample.labels.tolist())
    scale = out.scale
    for box, label in zip(boxes, labels):  # each kept box is its own input box, scaled (and cut at the border)
        source = sample.boxes[label].astype(np.float64) * scale
        width, height = box[2] - box[0], box[3] - box[1]
        assert width <= source[2] - source[0] + 1e-3 and height <= source[3] - source[1] + 1e-3
        if 0 < box[0] and box[2] < size:  # not cut horizontally: the full scaled width
            assert abs(width - (source[2] - source[0])) < 1e-3
        if 0 < box[1] and box[3] < size:
            assert abs(height - (source[3] - source[1])) < 1e-3


@SETTINGS
@given(sample=samples(), size=st.sampled_from([(64, 64), (96, 128), (320, 320)]))
def test_letterbox_then_restore_maps_boxes_back_within_one_pixel(sample, size):
    out = Letterbox(size)(sample)
    assert out.image.shape[:2] == size
    height, width = sample.image.shape[:2]
    content = np.array([width, height, width, height]) * out.scale
    assert (out.boxes <= content + 1e-3).all()  # boxes stay on the image, never on the padding
    restored = scale_boxes_to_original(torch.from_numpy(out.boxes), out.scale, (height, width)).numpy()
    assert np.abs(restored - sample.boxes).max(initial=0.0) <= 1.0
