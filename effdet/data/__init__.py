"""Data pipeline: COCO-format dataset, box-aware transforms, batching, and the synthetic demo set."""

from effdet.data.benchmark import benchmark_loader
from effdet.data.coco import MIN_BOX_SIZE, CocoDetection
from effdet.data.collate import collate_detection, worker_init_fn
from effdet.data.demo import DEMO_CATEGORIES, make_demo_dataset
from effdet.data.transforms import (
    Compose,
    DetectionSample,
    Letterbox,
    RandomHorizontalFlip,
    RandomScaleCrop,
    ToTensor,
    eval_transforms,
    train_transforms,
)

__all__ = [
    "CocoDetection",
    "Compose",
    "DEMO_CATEGORIES",
    "DetectionSample",
    "Letterbox",
    "MIN_BOX_SIZE",
    "RandomHorizontalFlip",
    "RandomScaleCrop",
    "ToTensor",
    "benchmark_loader",
    "collate_detection",
    "eval_transforms",
    "make_demo_dataset",
    "train_transforms",
    "worker_init_fn",
]
