"""Type aliases shared by the whole package (one definition each). No imports beyond the standard library: the
torch-free runtime uses them too."""
from __future__ import annotations

import os
from typing import Any, Mapping, Union

PathLike = Union[str, "os.PathLike[str]"]
"""A file-system path: ``str`` or ``pathlib.Path``."""

ImageInput = Union[PathLike, "np.ndarray"]
"""An image given to a detector: a file path, or a numpy image (``H x W x 3``, ``H x W`` grey, ``H x W x 4``)."""

Detections = Mapping[str, Any]
"""Detections of one image: ``{"boxes": [K, 4] xyxy pixels, "scores": [K], "labels": [K] in 0..C-1}``
(torch tensors from :func:`effdet.modeling.decode.detect_batch`, numpy arrays from the Predictor)."""

__all__ = ["Detections", "ImageInput", "PathLike"]
