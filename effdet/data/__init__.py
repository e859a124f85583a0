"""Data pipeline: COCO-format dataset, box-aware transforms, batching, and the synthetic demo set.

Importing this package calls ``cv2.setNumThreads(0)``: OpenCV runs single-threaded in this process
and in the DataLoader workers forked from it. Workers are the parallelism of data loading (OpenCV
threads in every worker would oversubscribe the cores), and the setting must be made in the parent:
calling ``cv2.setNumThreads`` inside a forked worker, after the parent used OpenCV's thread pool,
deadlocks (measured here with OpenCV 5.0), so no ``worker_init_fn`` may do it.
"""

import cv2

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

cv2.setNumThreads(0)

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
