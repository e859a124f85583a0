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
