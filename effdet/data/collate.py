"""Batching for torch DataLoaders: the detection collate function and a worker initialiser."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

__all__ = ["collate_detection", "collate_source_images", "worker_init_fn"]


def _as_tensor(value: Any, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    return torch.as_tensor(value, dtype=dtype)


def _pad_boxes(items: list[torch.Tensor]) -> tuple:
    """Stack ``[N_i, 4]`` boxes into ``[B, M, 4]`` zeros-padded, ``M = max(1, max N_i)``; return mask too."""
    length = max([1] + [len(item) for item in items])
    boxes = torch.zeros((len(items), length, 4), dtype=torch.float32)
    mask = torch.zeros((len(items), length), dtype=torch.bool)
    for row, item in enumerate(items):
        boxes[row, : len(item)] = item
        mask[row, : len(item)] = True
    return boxes, mask


def collate_detection(samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Batch dataset samples (see ``CocoDetection.__getitem__``) into padded tensors.

    Returns:
        ``images`` uint8 ``[B, 3, S, S]``; ``boxes`` float32 ``[B, M, 4]`` xyxy, zero padded with
        ``M = max(1, most objects in an image)``; ``labels`` int64 ``[B, M]``, ``-1`` marks padding;
        ``crowd_boxes`` float32 ``[B, K, 4]`` and ``crowd_mask`` bool ``[B, K]`` (``K >= 1``);
        ``image_ids`` int64 ``[B]``; ``scales`` float32 ``[B]``; ``orig_sizes`` int64 ``[B, 2]`` (h, w).
    """
    if not samples:
        raise ValueError("collate_detection got an empty list of samples")
    images = [sample["image"] for sample in samples]
    if not all(isinstance(image, torch.Tensor) for image in images):
        raise TypeError("collate_detection needs image tensors [3, S, S]: give the dataset a transform "
                        "that ends with ToTensor (e.g. train_transforms / eval_transforms)")
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) != 1:
        raise ValueError(f"all images in a batch must have the same shape, got {sorted(shapes)}")

    box_list = [_as_tensor(sample["boxes"], torch.float32).reshape(-1, 4) for sample in samples]
    boxes, object_mask = _pad_boxes(box_list)
    labels = torch.full(object_mask.shape, -1, dtype=torch.int64)
    for row, sample in enumerate(samples):
        sample_labels = _as_tensor(sample["labels"], torch.int64).reshape(-1)
        if len(sample_labels) != len(box_list[row]):
            raise ValueError(f"sample {row}: {len(box_list[row])} boxes but {len(sample_labels)} labels")
        labels[row, : len(sample_labels)] = sample_labels
    crowd_boxes, crowd_mask = _pad_boxes(
        [_as_tensor(sample["crowd_boxes"], torch.float32).reshape(-1, 4) for sample in samples]
    )
    return {
        "images": torch.stack(images),
        "boxes": boxes,
        "labels": labels,
        "crowd_boxes": crowd_boxes,
        "crowd_mask": crowd_mask,
        "image_ids": torch.tensor([int(sample["image_id"]) for sample in samples], dtype=torch.int64),
        "scales": torch.tensor([float(sample["scale"]) for sample in samples], dtype=torch.float32),
        "orig_sizes": torch.tensor([tuple(sample["orig_size"]) for sample in samples], dtype=torch.int64),
    }


def collate_source_images(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Batch samples whose images are as read (``H x W x 3`` RGB numpy of any size: a dataset without a transform),
    for sliced inference, which cuts each image itself.

    Returns:
        ``images``: list of the numpy images; ``image_ids`` int64 ``[B]``; ``orig_sizes`` int64 ``[B, 2]`` (h, w);
        ``boxes`` / ``labels``: lists of each sample's (source pixels).
    """
    if not samples:
        raise ValueError("collate_source_images got an empty list of samples")
    images = [sample["image"] for sample in samples]
    if not all(isinstance(image, np.ndarray) and image.ndim == 3 for image in images):
        raise TypeError("collate_source_images needs the images as read (H x W x 3 numpy): give the dataset no "
                        "transform")
    return {
        "images": images,
        "boxes": [sample["boxes"] for sample in samples],
        "labels": [sample["labels"] for sample in samples],
        "image_ids": torch.tensor([int(sample["image_id"]) for sample in samples], dtype=torch.int64),
        "orig_sizes": torch.tensor([tuple(image.shape[:2]) for image in images], dtype=torch.int64).reshape(-1, 2),
    }


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed numpy's legacy global generator from the worker's torch seed.

    Our transforms already draw from torch's generator, which DataLoader seeds per worker; this
    protects user code that calls ``np.random.*`` from repeating the same numbers in every worker.
    It deliberately does NOT call ``cv2.setNumThreads``: doing that in a forked worker deadlocks
    (see :func:`limit_opencv_threads`, which datasets call in the parent instead).
    """
    np.random.seed(torch.initial_seed() % 2**32)


def limit_opencv_threads() -> None:
    """Run OpenCV single-threaded in this process and in the DataLoader workers forked from it.

    Datasets call this when they are built (in the parent, before any worker forks): workers are the
    parallelism of data loading, and OpenCV threads in every worker would oversubscribe the cores. The
    setting must be made in the parent: calling ``cv2.setNumThreads`` inside a forked worker, after the
    parent used OpenCV's thread pool, deadlocks (measured with OpenCV 5.0), so no ``worker_init_fn`` may do it.
    """
    import cv2

    cv2.setNumThreads(0)
