"""Data pipeline: COCO-format dataset, box-aware transforms, batching, image sources, the synthetic demo set, and the
pre-processing that training, the Predictor and the torch-free runtime share (:mod:`.preprocess`: image loading,
letterbox, normalisation) and drawing boxes (:mod:`.visualize`).

Importing this package is cheap and has no side effects: the names below are loaded from their modules
on first use. OpenCV runs single-threaded in any process that builds a dataset (see
:func:`effdet.data.collate.limit_opencv_threads`): DataLoader workers are the parallelism of data loading.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CocoDetection": "coco", "MIN_BOX_SIZE": "checks",
    "collate_detection": "collate", "limit_opencv_threads": "collate", "worker_init_fn": "collate",
    "DEMO_CATEGORIES": "demo", "make_demo_dataset": "demo",
    "COCO90_CATEGORY_IDS": "coco_names", "COCO90_CLASS_NAMES": "coco_names",
    "Compose": "transforms", "DetectionSample": "transforms", "Letterbox": "transforms",
    "RandomHorizontalFlip": "transforms", "RandomScaleCrop": "transforms", "ToTensor": "transforms",
    "eval_transforms": "transforms", "train_transforms": "transforms",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
