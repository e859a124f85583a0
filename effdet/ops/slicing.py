"""Sliced inference of large images: the window grid, and detecting an image slice by slice.

An image with a side longer than ``slice_size`` (:class:`~effdet.modeling.postprocess_settings.PostprocessSettings`, config
``eval.slice_size``) is cut into ``slice_size x slice_size`` windows of the source image (:func:`slice_grid`); each
window is letterboxed and detected like a whole image, ``slice_batch_size`` windows per forward pass; the detections
are shifted to source pixels, joined (with those of the whole image when ``slice_full_image``), merged per class
(:func:`effdet.ops.merge.merge_boxes` with ``merge``, ``merge_metric``, ``merge_threshold``) and the best
``max_detections`` kept. An image whose sides are both at most ``slice_size`` is detected as it is.

numpy only (no torch): the Predictor (torch or ONNX runtimes), the evaluation of a dataset, training's validation and the
torch-free runtime (:class:`effdet.runtime.OnnxDetector`) all call :func:`detect_images` with their own ``detect``
function, which runs one batch of whole images: ``detect(rgb_images) -> [{"boxes" [K, 4] xyxy in that image's
pixels, "scores" [K], "labels" [K]} ...]`` (numpy arrays), with the model's own per-image post-processing (score
threshold, NMS, ``max_detections``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .merge import merge_boxes

__all__ = ["DetectFunction", "detect_images", "detect_sliced", "detections_on_host", "is_sliced", "slice_grid",
           "slice_starts"]

DetectFunction = Callable[[Sequence[np.ndarray]], Sequence[dict[str, Any]]]


def slice_starts(length: int, size: int, overlap: float) -> list[int]:
    """Start offsets of windows of ``size`` along a side of ``length`` pixels: every ``stride = size * (1 - overlap)``
    pixels (at least 1), the last window flush with the end; one window at 0 when ``length <= size``."""
    if size < 1 or not 0.0 <= overlap < 1.0:
        raise ValueError(f"slice size must be >= 1 and overlap in [0, 1), got {size} and {overlap}")
    if length <= size:
        return [0]
    stride = max(1, int(size * (1.0 - overlap)))
    starts = list(range(0, length - size, stride))
    starts.append(length - size)  # flush with the edge; never beyond the image
    return starts


def slice_grid(height: int, width: int, size: int, overlap: float) -> np.ndarray:
    """The windows covering an image: ``int64 [N, 4]`` xyxy in source pixels (``x2``/``y2`` exclusive), row by row.

    Windows are ``size x size`` (a side shorter than ``size`` gives windows as long as the side), start every
    ``size * (1 - overlap)`` pixels, and the last one of each row and column ends at the image's edge: together they
    cover every pixel and none reaches beyond the image.
    """
    rows = slice_starts(int(height), int(size), overlap)
    columns = slice_starts(int(width), int(size), overlap)
    grid = [(x, y, min(x + size, width), min(y + size, height)) for y in rows for x in columns]
    return np.asarray(grid, np.int64).reshape(-1, 4)


def is_sliced(height: int, width: int, settings: Any) -> bool:
    """Whether an image of ``height x width`` is detected slice by slice: ``settings.slice_size`` is set and one side
    is longer."""
    size = getattr(settings, "slice_size", None)
    return size is not None and max(int(height), int(width)) > int(size)


def _empty() -> dict[str, np.ndarray]:
    return {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
            "labels": np.zeros(0, np.int64)}


def detections_on_host(detections: dict[str, Any]) -> dict[str, np.ndarray]:
    """``boxes`` float32 ``[K, 4]`` / ``scores`` float32 ``[K]`` / ``labels`` int64 ``[K]`` as numpy arrays (tensors,
    on any device, are moved to the host; arrays are kept)."""
    out = {}
    for key, dtype in (("boxes", np.float32), ("scores", np.float32), ("labels", np.int64)):
        value = detections[key]
        if hasattr(value, "detach"):  # a torch tensor, on any device
            value = value.detach().float().cpu().numpy() if key != "labels" else value.detach().cpu().numpy()
        out[key] = np.asarray(value, dtype)
    out["boxes"] = out["boxes"].reshape(-1, 4)
    return out


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def detect_sliced(image: np.ndarray, detect: DetectFunction, settings: Any) -> dict[str, np.ndarray]:
    """Detections of one ``H x W x 3`` image, slice by slice (see the module doc), whatever its size.

    Only one batch of ``settings.slice_batch_size`` windows is cut out at a time (views of ``image``, copied by the
    letterbox), so memory holds the image and one batch.

    Returns:
        ``{"boxes": float32 [K, 4] xyxy source pixels, "scores": float32 [K], "labels": int64 [K]}``, by decreasing
        score, ``K <= settings.max_detections``.
    """
    height, width = image.shape[:2]
    windows = slice_grid(height, width, int(settings.slice_size), float(settings.slice_overlap))
    parts: list[dict[str, np.ndarray]] = []
    for batch in _batches(windows, int(settings.slice_batch_size)):
        crops = [image[y1:y2, x1:x2] for x1, y1, x2, y2 in batch.tolist()]
        for (x1, y1, _, _), found in zip(batch.tolist(), detect(crops)):
            found = detections_on_host(found)
            found["boxes"] = found["boxes"] + np.asarray([x1, y1, x1, y1], np.float32)
            parts.append(found)
    if settings.slice_full_image:
        parts.append(detections_on_host(detect([image])[0]))
    parts = [p for p in parts if len(p["scores"])]
    if not parts:
        return _empty()
    return merge_boxes(np.concatenate([p["boxes"] for p in parts]), np.concatenate([p["scores"] for p in parts]),
                       np.concatenate([p["labels"] for p in parts]), settings.merge, settings.merge_metric,
                       float(settings.merge_threshold), int(settings.max_detections))


def detect_images(images: Sequence[np.ndarray], detect: DetectFunction, settings: Any) -> list[dict[str, Any]]:
    """Detections of each image, in order: images larger than ``settings.slice_size`` slice by slice
    (:func:`detect_sliced`), the others in one ``detect`` call (as without slicing).

    Returns what ``detect`` returns for the whole images, and for the sliced ones the dict of :func:`detect_sliced`.
    """
    results: list[Any] = [None] * len(images)
    whole = [i for i, image in enumerate(images) if not is_sliced(image.shape[0], image.shape[1], settings)]
    if whole:
        for i, found in zip(whole, detect([images[i] for i in whole])):
            results[i] = found
    for i, image in enumerate(images):
        if results[i] is None:
            results[i] = detect_sliced(image, detect, settings)
    return results
