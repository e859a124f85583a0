"""Figures of the error analysis: PR curves, per-class AP bars, the confusion matrix, the error breakdown, and a
gallery of the images with the most errors.

Boxes: COCO ``[x, y, w, h]`` in original-image pixels; drawings use ``[x1, y1, x2, y2]``.
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from ..cocoeval import PathLike, iou_index, precision_all_areas

from .errors import ERROR_NAMES, ERROR_TYPES

logger = logging.getLogger("effdet.analysis")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(plt: Any, fig: Any, path: Path) -> Path:
    """Lay out, write (PNG at 80 dpi) and close a matplotlib figure; returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def plot_pr_curves(evaluator: Any, names: dict[int, str], path: Path, max_classes: int = 35) -> Path:
    """Per class (most ground truth first, up to ``max_classes``) precision vs recall at IoU 0.5 and averaged
    over 0.50:0.95, from ``eval['precision']`` (area all, 100 detections); the first panel is the class mean."""
    plt = _pyplot()
    precision = precision_all_areas(evaluator)  # [T, R, K]
    recall = evaluator.params.recThrs
    t50 = iou_index(evaluator, 0.5)
    cat_ids = list(evaluator.params.catIds)
    gt_counts = {c: len(evaluator.cocoGt.getAnnIds(catIds=[c], iscrowd=False)) for c in cat_ids}
    order = sorted(range(len(cat_ids)), key=lambda k: -gt_counts[cat_ids[k]])[:max_classes]

    def curves(k: Optional[int]) -> tuple[np.ndarray, np.ndarray]:
        block = precision if k is None else precision[:, :, k:k + 1]
        masked = np.where(block > -1, block, np.nan)
        with np.errstate(all="ignore"), _quiet_nan():
            at50 = np.nanmean(masked[t50], axis=-1)
            averaged = np.nanmean(masked, axis=(0, 2))
        return at50, averaged

    panels = [None] + order
    columns = min(6, len(panels))
    rows = int(np.ceil(len(panels) / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.9 * rows), squeeze=False)
    for axis, k in zip(axes.flat, panels):
        at50, averaged = curves(k)
        title = "all classes (mean)" if k is None else f"{names[cat_ids[k]]} ({gt_counts[cat_ids[k]]} GT)"
        ap50 = np.nanmean(at50) if np.isfinite(at50).any() else float("nan")
        ap = np.nanmean(averaged) if np.isfinite(averaged).any() else float("nan")
        axis.plot(recall, at50, label=f"IoU 0.5: AP {ap50:.3f}", color="tab:blue")
        axis.plot(recall, averaged, label=f"IoU 0.5:0.95: AP {ap:.3f}", color="tab:orange")
        axis.set_title(title, fontsize=9)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.02)
        axis.set_xlabel("recall", fontsize=8)
        axis.set_ylabel("precision", fontsize=8)
        axis.legend(fontsize=7, loc="lower left")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    fig.suptitle(f"precision-recall (COCOeval, area all, {int(evaluator.params.maxDets[-1])} detections per image)",
                 fontsize=10)
    return _save_figure(plt, fig, path)


@contextlib.contextmanager
def _quiet_nan():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def plot_per_class_ap(table: dict[str, dict[str, Optional[float]]], path: Path) -> Path:
    plt = _pyplot()
    items = sorted(((n, v) for n, v in table.items() if v["AP"] is not None), key=lambda item: item[1]["AP"])
    fig, axis = plt.subplots(figsize=(7, max(2.5, 0.32 * len(items) + 1.2)))
    y = np.arange(len(items))
    axis.barh(y - 0.2, [v["AP50"] for _, v in items], height=0.4, label="AP50", color="tab:blue")
    axis.barh(y + 0.2, [v["AP"] for _, v in items], height=0.4, label="AP (0.5:0.95)", color="tab:orange")
    for row, (_, value) in enumerate(items):
        axis.text(value["AP50"] + 0.01, row - 0.2, f"{value['AP50']:.3f}", va="center", fontsize=7)
        axis.text(value["AP"] + 0.01, row + 0.2, f"{value['AP']:.3f}", va="center", fontsize=7)
    axis.set_yticks(y)
    axis.set_yticklabels([n for n, _ in items], fontsize=8)
    axis.set_xlim(0, 1.1)
    axis.set_xlabel("average precision")
    axis.set_title("per-class AP (classes without ground truth left out)", fontsize=10)
    axis.legend(fontsize=8, loc="lower right")
    return _save_figure(plt, fig, path)


def plot_confusion_matrix(confusion: Mapping[str, Any], path: Path) -> Path:
    plt = _pyplot()
    matrix = np.asarray(confusion["matrix"], dtype=np.float64)
    names = confusion["classes"]
    size = max(4.0, 0.5 * len(names) + 2)
    fig, axis = plt.subplots(figsize=(size + 1, size))
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if len(names) <= 30:
        for (r, c), value in np.ndenumerate(matrix):
            if value:
                axis.text(c, r, f"{int(value)}", ha="center", va="center", fontsize=7,
                          color="white" if shares[r, c] > 0.5 else "black")
    axis.set_xticks(range(len(names)))
    axis.set_yticks(range(len(names)))
    axis.set_xticklabels(names, rotation=60, ha="right", fontsize=8)
    axis.set_yticklabels(names, fontsize=8)
    axis.set_xlabel("prediction")
    axis.set_ylabel("ground truth")
    axis.set_title(f"confusion (counts; colour = share of the row)\nscore >= {confusion['score_threshold']}, "
                   f"IoU >= {confusion['iou_threshold']}", fontsize=9)
    fig.colorbar(image, ax=axis, fraction=0.046)
    return _save_figure(plt, fig, path)


def plot_errors(breakdown: Mapping[str, Any], path: Path) -> Path:
    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(7, 3.6))
    values = [breakdown["dAP"][k] for k in ERROR_TYPES]
    bars = axis.bar([f"{k}\n{ERROR_NAMES[k]}" for k in ERROR_TYPES], values,
                    color=["tab:red", "tab:orange", "tab:olive", "tab:purple", "tab:gray", "tab:blue"])
    for bar, kind in zip(bars, ERROR_TYPES):
        axis.text(bar.get_x() + bar.get_width() / 2, bar.get_height(),
                  f"{breakdown['dAP'][kind]:.2f}\n(n={breakdown['counts'][kind]})", ha="center", va="bottom",
                  fontsize=7)
    axis.set_ylabel("dAP50 (points): AP gained by fixing")
    axis.set_ylim(0, max(values + [1.0]) * 1.3)
    axis.set_title(f"error breakdown (TIDE), AP50 = {breakdown['ap50']:.2f}", fontsize=10)
    axis.tick_params(axis="x", labelsize=8)
    return _save_figure(plt, fig, path)


def write_gallery(gt: Any, confusion: Mapping[str, Any], images_dir: PathLike, out: Path, count: int,
                  names: dict[int, str], exif_orientation: str = "apply",
                  allow_outside_images: bool = False) -> list[Path]:
    """The ``count`` images with the most errors at the confusion operating point: ground truth (left) and
    detections (right; green correct, orange wrong class, red background; missed objects dashed blue)."""
    import cv2

    from ...data.checks import PathOutsideImagesError, resolve_image_path
    from ...data.preprocess import ImageReadError, load_image
    from ...data.visualize import draw_boxes, side_by_side

    ranked = sorted(((n, i) for i, n in confusion["errors_per_image"].items() if n > 0), key=lambda x: (-x[0], x[1]))
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for rank, (errors, image_id) in enumerate(ranked[:count]):
        info = gt.imgs[image_id]
        try:
            image_path = resolve_image_path(images_dir, info["file_name"], allow_outside_images)
            image = load_image(image_path, exif_orientation)
        except (ImageReadError, PathOutsideImagesError) as error:
            logger.warning("gallery: image id %s: %s", image_id, error)
            continue
        pairs = confusion["_pairs"][image_id]
        objects, dets, det_match = pairs["objects"], pairs["detections"], pairs["det_match"]
        xyxy = lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]  # noqa: E731
        left = draw_boxes(image, [xyxy(o["bbox"]) for o in objects], [names[o["category_id"]] for o in objects],
                          color=(40, 200, 40))
        colours, boxes, captions = [], [], []
        for d, det in enumerate(dets):
            if d in det_match:
                good = objects[det_match[d]]["category_id"] == det["category_id"]
                colours.append((40, 200, 40) if good else (255, 150, 0))
            else:
                colours.append((230, 30, 30))
            boxes.append(xyxy(det["bbox"]))
            captions.append(names[int(det["category_id"])])
        right = draw_boxes(image, boxes, captions, scores=[d["score"] for d in dets], color=colours) if dets else image
        matched = set(det_match.values())
        missed = [o for k, o in enumerate(objects) if k not in matched]
        if missed:
            right = draw_boxes(right, [xyxy(o["bbox"]) for o in missed], [f"missed {names[o['category_id']]}"
                               for o in missed], color=(40, 90, 255), dashed=True)
        panel = side_by_side([left, right], [f"ground truth ({len(objects)})",
                                             f"detections >= {confusion['score_threshold']}: {errors} errors"])
        path = out / f"{rank:02d}_{Path(str(info['file_name'])).stem}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        written.append(path)
    return written
