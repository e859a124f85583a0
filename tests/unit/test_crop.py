"""The training crop keeps partly visible boxes when asked (``min_visible``; data.crop_min_visible)."""
from __future__ import annotations

import numpy as np

from effdet.data.transforms import DetectionSample, train_transforms


def test_crop_with_min_visible_zero_keeps_a_mostly_cut_off_box():
    # 100 x 100 image scaled x2 (200 x 200), then a 100 x 100 crop at offsets in [0, 100]: the box [0, 0, 30, 30]
    # becomes [0, 0, 60, 60] - offset, so for many offsets only a corner (< 20% of its area) stays visible.
    image = np.zeros((100, 100, 3), np.uint8)
    boxes = np.array([[0, 0, 30, 30]], np.float32)
    sample = DetectionSample(image, boxes, np.array([0]), np.zeros((0, 4), np.float32))
    kept = {}
    for visible in (0.0, 0.2):
        kept[visible] = []
        for seed in range(40):
            transform = train_transforms(100, scale_range=(2.0, 2.0), flip_probability=0.0, min_visible=visible)
            transform.transforms[0].rng = np.random.default_rng(seed)  # the same crop for both settings
            out = transform(sample)
            assert all((out.boxes[:, 2:] - out.boxes[:, :2]).ravel() >= 2)  # slivers under 2 px always go
            kept[visible].append(out.boxes[0] if len(out.boxes) else None)
    partly = [box for box, other in zip(kept[0.0], kept[0.2]) if box is not None and other is None]
    assert len(partly) >= 3  # kept only with min_visible 0 ...
    for box in partly:  # ... and exactly those are under 20% visible
        assert (box[2] - box[0]) * (box[3] - box[1]) < 0.2 * 60 * 60
    assert all(b is not None for b, o in zip(kept[0.0], kept[0.2]) if o is not None)
