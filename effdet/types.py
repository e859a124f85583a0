"""Type aliases shared by the whole package (one definition each)."""
from __future__ import annotations

import os
from typing import Any, Mapping, Union

PathLike = Union[str, "os.PathLike[str]"]
"""A file-system path: ``str`` or ``pathlib.Path``."""

Detections = Mapping[str, Any]
"""Detections of one image: ``{"boxes": [K, 4] xyxy pixels, "scores": [K], "labels": [K] in 0..C-1}``
(torch tensors from :func:`effdet.inference.detect_batch`, numpy arrays from the Predictor)."""

__all__ = ["Detections", "PathLike"]
