"""Merging the detections of overlapping views of one image (the slices of sliced inference, and the whole image):
greedy per-class non-maximum suppression (``nms``) or non-maximum merging (``nmm``), with the overlap measured as IoU
or IoS (intersection over the smaller box's area).

numpy only (no torch): the torch-free runtime (:class:`effdet.runtime.OnnxDetector`) and the Predictor use this same
function, on detections already on the host. The choices are :data:`effdet.choices.MERGE_METHODS` and
:data:`effdet.choices.MERGE_METRICS`.
"""
from __future__ import annotations

import numpy as np

from ..choices import MERGE_METHODS, MERGE_METRICS

__all__ = ["merge_boxes", "overlap"]


def overlap(box: np.ndarray, boxes: np.ndarray, metric: str = "iou") -> np.ndarray:
    """Overlap of one xyxy box ``[4]`` with each of ``boxes`` ``[N, 4]`` (xyxy, same frame) -> ``[N]`` float64.

    ``metric``: ``"iou"`` intersection / union; ``"ios"`` intersection / the smaller of the two areas (1 when one box
    lies inside the other). Degenerate boxes (zero area) overlap nothing (0).
    """
    if metric not in MERGE_METRICS:
        raise ValueError(f"merge metric must be one of {list(MERGE_METRICS)}, got {metric!r}")
    box = np.asarray(box, np.float64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    width = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    height = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    intersection = width * height
    area = max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    denominator = (area + areas - intersection) if metric == "iou" else np.minimum(area, areas)
    return np.divide(intersection, denominator, out=np.zeros_like(intersection), where=denominator > 0)


def merge_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    method: str = "nms",
    metric: str = "iou",
    threshold: float = 0.5,
    max_detections: int | None = None,
) -> dict[str, np.ndarray]:
    """Greedy per-class merging of detections of one image.

    Boxes are visited by decreasing score (ties: input order). The visited box is kept; every not yet visited box of
    the same label whose overlap with it (``metric``, :func:`overlap`) is above ``threshold`` is taken out:

    * ``method="nms"``: dropped (non-maximum suppression; with ``metric="iou"`` the classic hard NMS);
    * ``method="nmm"``: absorbed (non-maximum merging): the kept box becomes the enclosing box of itself and every box
      it absorbs (overlaps are measured against the kept box as it was found), and keeps its own score, the largest.

    Args:
        boxes: ``[N, 4]`` xyxy, all in one frame (e.g. source-image pixels). scores: ``[N]``. labels: ``[N]`` int.
        max_detections: keep at most this many, the best (None: all).

    Returns:
        ``{"boxes": float32 [K, 4] xyxy, "scores": float32 [K], "labels": int64 [K]}`` by decreasing score.
    """
    if method not in MERGE_METHODS:
        raise ValueError(f"merge method must be one of {list(MERGE_METHODS)}, got {method!r}")
    if metric not in MERGE_METRICS:
        raise ValueError(f"merge metric must be one of {list(MERGE_METRICS)}, got {metric!r}")
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.asarray(labels, np.int64).reshape(-1)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels: they must agree")
    kept_boxes, kept_scores, kept_labels = [], [], []
    for label in np.unique(labels):
        index = np.flatnonzero(labels == label)
        index = index[np.argsort(-scores[index], kind="stable")]
        class_boxes = boxes[index]
        open_ = np.ones(len(index), bool)  # not yet visited
        for position in range(len(index)):
            if not open_[position]:
                continue
            open_[position] = False
            rest = np.flatnonzero(open_)
            box = class_boxes[position]
            if len(rest):
                taken = rest[overlap(box, class_boxes[rest], metric) > threshold]
                open_[taken] = False
                if method == "nmm" and len(taken):
                    group = class_boxes[np.append(taken, position)]
                    box = np.concatenate([group[:, :2].min(axis=0), group[:, 2:].max(axis=0)])
            kept_boxes.append(box)
            kept_scores.append(scores[index[position]])
            kept_labels.append(label)
    if not kept_scores:
        return {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
                "labels": np.zeros(0, np.int64)}
    out_scores = np.asarray(kept_scores, np.float32)
    order = np.argsort(-out_scores, kind="stable")
    if max_detections is not None:
        order = order[:max(int(max_detections), 0)]
    return {"boxes": np.asarray(kept_boxes, np.float32).reshape(-1, 4)[order], "scores": out_scores[order],
            "labels": np.asarray(kept_labels, np.int64)[order]}
