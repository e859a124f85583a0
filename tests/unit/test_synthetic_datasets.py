"""The generated benchmark datasets (effdet.data.synthetic): deterministic, and each of its kind."""
from __future__ import annotations

import json

import pytest

from effdet.data.synthetic import DIGIT_CATEGORIES, make_synthetic_dataset, object_size_summary


def test_generated_kinds_are_deterministic_and_of_their_kind(tmp_path):
    a = make_synthetic_dataset("similar", tmp_path / "a", num_train=3, num_val=1, seed=5)
    b = make_synthetic_dataset("similar", tmp_path / "b", num_train=3, num_val=1, seed=5)
    assert open(a["train_annotations"], "rb").read() == open(b["train_annotations"], "rb").read()
    similar = json.load(open(a["train_annotations"]))
    assert len(similar["categories"]) == 10 == len(DIGIT_CATEGORIES)
    assert sorted(c["id"] for c in similar["categories"]) != list(range(1, 11))  # non-contiguous ids
    small = json.load(open(make_synthetic_dataset("small", tmp_path / "s", 4, 1)["train_annotations"]))
    stats = object_size_summary(small)
    assert stats["count"] >= 20  # many objects per image
    assert 14 <= stats["min"] and stats["max"] <= 44  # 16-40 px (+ anti-aliasing)
    with pytest.raises(ValueError, match="valid kinds"):
        make_synthetic_dataset("nope", tmp_path / "n")


def test_aerial_kind_has_large_crowded_canvases_of_small_objects(tmp_path):
    """The set sliced inference is measured on (issue 23): 1,500-3,000 px canvases, 50-400 objects of 12-40 px per
    image with at least a fifth of the images above 100 objects, and a few large objects; seeded."""
    import collections
    import math

    paths = make_synthetic_dataset("aerial", tmp_path / "a", num_train=6, num_val=0, seed=2)
    data = json.load(open(paths["train_annotations"]))
    assert all(1500 <= image["width"] <= 3000 and 1500 <= image["height"] <= 3000 for image in data["images"])
    per_image = collections.Counter(a["image_id"] for a in data["annotations"])
    counts = [per_image[image["id"]] for image in data["images"]]
    assert all(45 <= c <= 400 for c in counts), counts  # 50-400 asked; a crowded canvas may place a few fewer
    assert sum(c > 100 for c in counts) >= len(counts) / 5, counts
    sides = sorted(math.sqrt(a["bbox"][2] * a["bbox"][3]) for a in data["annotations"])
    small = [s for s in sides if s <= 44]
    assert len(small) >= 0.95 * len(sides) and min(sides) >= 10  # 12-40 px (+ anti-aliasing and shape)
    assert any(s >= 90 for s in sides)  # a few large ones
    again = make_synthetic_dataset("aerial", tmp_path / "b", num_train=1, num_val=0, seed=2)
    first = json.load(open(again["train_annotations"]))
    assert first["annotations"] == [a for a in data["annotations"] if a["image_id"] == 1]  # seeded


def test_object_extent_from_a_window_equals_the_whole_mask():
    """render_scene reads each drawn object's box and area from a window around it (fast on large canvases); it
    must equal cv2.boundingRect / the pixel count of the whole mask, near the borders too."""
    import cv2
    import numpy as np

    from effdet.data.demo import _extent_and_clear, shape_painter
    from effdet.data.synthetic import digit_painter

    rng = np.random.default_rng(0)
    for trial in range(300):
        height, width = int(rng.integers(40, 300)), int(rng.integers(40, 300))
        size = float(rng.uniform(4, 0.9 * min(height, width)))
        centre = (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
        painter = digit_painter if trial % 2 else shape_painter
        name = str(int(rng.integers(0, 10))) if trial % 2 else ("circle", "square", "triangle")[trial % 3]
        mask = np.zeros((height, width), np.uint8)
        painter(name, centre, size, rng)(mask, 255, -1, cv2.LINE_8)
        expected = (tuple(cv2.boundingRect(mask)), int(np.count_nonzero(mask)))
        box, area = _extent_and_clear(mask, centre, size)
        assert (tuple(box), area) == expected
        assert not mask.any()
