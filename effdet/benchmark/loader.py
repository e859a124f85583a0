"""Data-loader throughput in one process: decode + train augmentation + collate."""

from __future__ import annotations

import os
import time
from typing import Union

import cv2

from ..data.coco import CocoDetection
from ..data.collate import collate_detection
from ..data.transforms import DetectionSample, train_transforms
from ..data.preprocess import SizeLike, load_image

from .common import run_worker

__all__ = ["benchmark_loader", "run"]


def benchmark_loader(
    images_dir: Union[str, os.PathLike],
    annotations_json: Union[str, os.PathLike],
    image_size: SizeLike,
    num_images: int = 200,
    batch_size: int = 8,
    scale_range: tuple[float, float] = (0.1, 2.0),
    opencv_threads: int = 1,
) -> dict[str, float]:
    """Time what one DataLoader worker does: a Python loop over the dataset plus collate.

    Uses ``opencv_threads`` OpenCV threads (1 = what a worker gets from ``worker_init_fn``) and restores
    the previous setting afterwards. Images are cycled if the dataset has fewer than ``num_images``.

    Returns:
        ``images_per_s`` (end to end), ``ms_per_image``, and the split ``decode_ms``, ``augment_ms``,
        ``collate_ms`` per image (decode = file read + JPEG decode + RGB; augment = scale jitter, crop,
        flip, to tensor), plus ``num_images``.
    """
    dataset = CocoDetection(images_dir, annotations_json, transform=train_transforms(image_size, scale_range))
    transform = dataset.transform
    previous_threads = cv2.getNumThreads()
    cv2.setNumThreads(opencv_threads)
    try:
        image_ids = dataset.image_ids
        dataset[0]  # warm-up (imports, allocator)
        decode = augment = collate = 0.0
        batch = []
        start = time.perf_counter()
        for step in range(num_images):
            index = step % len(dataset)
            t0 = time.perf_counter()
            image = load_image(dataset.image_path(index))
            t1 = time.perf_counter()
            boxes, labels, crowd = dataset.targets(index)
            sample = transform(DetectionSample(image, boxes, labels, crowd))
            batch.append({"image": sample.image, "boxes": sample.boxes, "labels": sample.labels,
                          "crowd_boxes": sample.crowd_boxes, "image_id": image_ids[index],
                          "orig_size": image.shape[:2], "scale": sample.scale})
            t2 = time.perf_counter()
            if len(batch) == batch_size or step == num_images - 1:
                collate_detection(batch)
                batch = []
            t3 = time.perf_counter()
            decode += t1 - t0
            augment += t2 - t1
            collate += t3 - t2
        total = time.perf_counter() - start
    finally:
        cv2.setNumThreads(previous_threads)
    return {
        "num_images": float(num_images),
        "images_per_s": num_images / total,
        "ms_per_image": 1000.0 * total / num_images,
        "decode_ms": 1000.0 * decode / num_images,
        "augment_ms": 1000.0 * augment / num_images,
        "collate_ms": 1000.0 * collate / num_images,
    }


def run(args) -> list[str]:
    r = run_worker("loader", 200, threads=1)
    rows = [f"| data loader, one worker process: decode + augment + collate, 640×480 JPEG → 512 | "
            f"{r['images_per_s']:.0f} images/s | decode {r['decode_ms']:.1f} ms, augment {r['augment_ms']:.1f} ms, "
            f"collate {r['collate_ms']:.2f} ms per image |", "|---|---|---|"]
    print(rows[0], flush=True)
    return rows
