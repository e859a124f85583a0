"""Where a detector goes wrong: PR curves, per-class AP, a confusion matrix, a TIDE-style error breakdown and a
gallery of the images with the most errors.

Everything starts from pycocotools' ``COCOeval`` (run once here with the standard parameters): PR curves and
per-class AP are read from ``eval['precision']`` (``[T iou, R recall, K class, A area, M maxDets]``), and
which detection matched which ground truth at IoU 0.5 from ``evalImgs`` (``dtMatches`` / ``gtMatches``).
IoU between a detection and ground truth of *other* classes (which COCOeval never computes) comes from
``pycocotools.mask.iou``, the function COCOeval uses.

Error breakdown (Bolya et al., "TIDE: A General Toolbox for Identifying Object Detection Errors", ECCV 2020),
foreground IoU ``t_f = 0.5``, background IoU ``t_b = 0.1``. Each false positive at IoU 0.5 gets the first
type that fits, in this order:

* ``Loc``  (localisation): IoU with a GT of its class in ``[t_b, t_f]``;
* ``Cls``  (classification): IoU >= ``t_f`` with a GT of another class;
* ``Dupe`` (duplicate): IoU >= ``t_f`` with a GT of its class that a higher-scoring detection matched;
* ``Bkg``  (background): IoU <= ``t_b`` with every GT;
* ``Both`` (classification and localisation): anything else (IoU in ``(t_b, t_f)`` with another class).

``Miss``: a GT no detection matched and no ``Cls``/``Loc`` error points at. The AP lost to a type (``dAP``,
in AP50 points, 0..100) is AP50 with every error of that type fixed by an oracle, minus AP50 as it is, each
type fixed on its own: ``Cls`` and ``Loc`` errors become the true positive of their GT (only the
highest-scoring one per GT, and only if no detection matched that GT already; the others are removed),
``Dupe``, ``Bkg`` and ``Both`` detections are removed, and missed GTs are removed from the ground truth.
The fixed sets are scored by pycocotools again (IoU 0.5, all areas, 100 detections), so ``dAP`` is in the
same units as COCO's AP50. Negative differences (interpolation effects) are reported as 0, as TIDE does.

Boxes: COCO results ``bbox`` ``[x, y, w, h]`` in original-image pixels; drawings use ``xyxy``.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .types import PathLike

logger = logging.getLogger("effdet.analysis")

__all__ = [
    "ERROR_TYPES",
    "analyze",
    "confusion_matrix",
    "error_breakdown",
    "format_error_table",
    "run_cocoeval",
]

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
ERROR_NAMES = {"Cls": "classification", "Loc": "localisation", "Both": "cls + loc", "Dupe": "duplicate",
               "Bkg": "background", "Miss": "missed"}


# ------------------------------------------------------------------------------------------- COCOeval


def _gt(coco_gt: Any) -> Any:
    from .evaluation import load_coco_gt

    return load_coco_gt(coco_gt, "pycocotools")


def _load_results(results: Union[Sequence[dict], PathLike]) -> List[dict]:
    if isinstance(results, (str, os.PathLike)):
        with open(results) as handle:
            results = json.load(handle)
    return [dict(r, bbox=list(r["bbox"])) for r in results]


def _dt_coco(gt: Any, results: List[dict]) -> Any:
    """Detections as a COCO object; the i-th result gets id i + 1 (pycocotools' loadRes numbering)."""
    from pycocotools.coco import COCO

    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return gt.loadRes(copy.deepcopy(results))
    dt = COCO()
    dt.dataset = {"images": list(gt.dataset["images"]), "categories": list(gt.dataset["categories"]),
                  "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        dt.createIndex()
    return dt


def run_cocoeval(coco_gt: Any, results: Union[Sequence[dict], PathLike], iou_thresholds: Optional[Sequence[float]] = None,
                 all_areas_only: bool = False) -> Any:
    """pycocotools ``COCOeval`` (bbox) after ``evaluate()`` and ``accumulate()``, quietly.

    ``iou_thresholds``: default COCO's 0.50:0.05:0.95; ``all_areas_only``: one area range ('all').
    """
    from pycocotools.cocoeval import COCOeval

    gt = _gt(coco_gt)
    dt = _dt_coco(gt, _load_results(results))
    evaluator = COCOeval(gt, dt, iouType="bbox")
    if iou_thresholds is not None:
        evaluator.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
    if all_areas_only:
        evaluator.params.areaRng = [evaluator.params.areaRng[0]]
        evaluator.params.areaRngLbl = ["all"]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _iou_index(evaluator: Any, iou: float) -> int:
    found = np.flatnonzero(np.isclose(evaluator.params.iouThrs, iou))
    if not len(found):
        raise ValueError(f"IoU {iou} is not one of the COCOeval thresholds {list(evaluator.params.iouThrs)}")
    return int(found[0])


def _mean_ap(precision: np.ndarray) -> Optional[float]:
    """Mean of the defined (> -1) entries."""
    defined = precision[precision > -1]
    return float(defined.mean()) if defined.size else None


def _ap50(gt: Any, results: List[dict]) -> float:
    """COCO AP at IoU 0.5 (all areas, 100 detections), averaged over classes with ground truth."""
    evaluator = run_cocoeval(gt, results, iou_thresholds=[0.5], all_areas_only=True)
    precision = evaluator.eval["precision"][0, :, :, 0, -1]  # [R, K]
    per_class = [_mean_ap(precision[:, k]) for k in range(precision.shape[1])]
    defined = [ap for ap in per_class if ap is not None]
    return float(np.mean(defined)) if defined else 0.0


def _class_names(gt: Any, class_names: Optional[Mapping[int, str]]) -> Dict[int, str]:
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt.loadCats(gt.getCatIds())}
    if class_names:
        names.update({int(k): str(v) for k, v in class_names.items()})
    return names


# ------------------------------------------------------------------------------------- error breakdown


def _image_gts(gt: Any, image_id: int) -> Tuple[List[dict], List[dict]]:
    """(objects, crowd regions) of an image: COCOeval's 'ignore' flag counts as crowd."""
    anns = gt.imgToAnns.get(image_id, [])
    objects = [a for a in anns if not a.get("iscrowd") and not a.get("ignore")]
    crowds = [a for a in anns if a.get("iscrowd") or a.get("ignore")]
    return objects, crowds


def _ious(boxes: Sequence[Sequence[float]], others: Sequence[Sequence[float]], crowd: bool = False) -> np.ndarray:
    """``[len(boxes), len(others)]`` IoU of xywh boxes (pycocotools.mask.iou; crowd: intersection over box)."""
    from pycocotools import mask as mask_utils

    if not len(boxes) or not len(others):
        return np.zeros((len(boxes), len(others)))
    values = mask_utils.iou([list(map(float, b)) for b in boxes], [list(map(float, o)) for o in others],
                            [int(crowd)] * len(others))
    return np.asarray(values, dtype=np.float64).reshape(len(boxes), len(others))


def error_breakdown(coco_gt: Any, results: Union[Sequence[dict], PathLike], evaluator: Any = None,
                    pos_threshold: float = 0.5, bg_threshold: float = 0.1) -> Dict[str, Any]:
    """TIDE-style main errors (see the module docstring).

    Args:
        coco_gt: ground truth (COCO object, dict or JSON path).
        results: COCO results (list or JSON path), in the order ``evaluator`` was built with.
        evaluator: a ``run_cocoeval(coco_gt, results)`` to reuse (must include IoU ``pos_threshold``).

    Returns:
        ``{"ap50": AP50 (0..100), "dAP": {type: points}, "counts": {type: n}, "errors": [per error:
        type, detection index or gt id, image id, target gt id]}``.
    """
    gt = _gt(coco_gt)
    results = _load_results(results)
    evaluator = evaluator or run_cocoeval(gt, results)
    t = _iou_index(evaluator, pos_threshold)
    params = evaluator.params
    num_areas, num_images = len(params.areaRng), len(params.imgIds)
    used_gt: set = set()
    evaluated = []  # (image id, category id, dt ids, dt matched?, dt ignored?)
    for k, category_id in enumerate(params.catIds):
        for i in range(num_images):
            entry = evaluator.evalImgs[k * num_areas * num_images + i]  # area index 0 = 'all'
            if entry is None:
                continue
            matches = np.asarray(entry["gtMatches"])[t] if len(entry["gtIds"]) else np.zeros(0)
            used_gt.update(g for g, m in zip(entry["gtIds"], matches) if m > 0)
            if len(entry["dtIds"]):
                evaluated.append((entry["image_id"], category_id, list(entry["dtIds"]),
                                  np.asarray(entry["dtMatches"])[t] > 0, np.asarray(entry["dtIgnore"])[t] > 0))

    errors: List[Dict[str, Any]] = []
    best_for_gt: Dict[int, Tuple[float, int]] = {}  # unused GT id -> (score, dt id) of its best Cls/Loc error
    cache: Dict[int, Tuple[List[dict], np.ndarray]] = {}
    for image_id, category_id, dt_ids, matched, ignored in evaluated:
        if image_id not in cache:
            objects, _ = _image_gts(gt, image_id)
            cache[image_id] = (objects, np.array([int(o["category_id"]) for o in objects]))
        objects, gt_cats = cache[image_id]
        false_ids = [d for d, m, g in zip(dt_ids, matched, ignored) if not m and not g]
        if not false_ids:
            continue
        dts = [evaluator.cocoDt.anns[d] for d in false_ids]
        ious = _ious([d["bbox"] for d in dts], [o["bbox"] for o in objects])
        for row, det in enumerate(dts):
            record = {"detection": int(det["id"]) - 1, "image_id": int(image_id), "score": float(det["score"]),
                      "category_id": int(category_id), "target_gt": None}
            if not objects:
                errors.append(dict(record, type="Bkg"))
                continue
            same = gt_cats == category_id
            used = np.array([o["id"] in used_gt for o in objects])
            same_iou = np.where(same, ious[row], 0.0)
            other_iou = np.where(~same, ious[row], 0.0)
            used_same_iou = np.where(same & used, ious[row], 0.0)
            if bg_threshold <= same_iou.max() <= pos_threshold:
                kind, target = "Loc", objects[int(same_iou.argmax())]
            elif other_iou.max() >= pos_threshold:
                kind, target = "Cls", objects[int(other_iou.argmax())]
            elif used_same_iou.max() >= pos_threshold:
                kind, target = "Dupe", objects[int(used_same_iou.argmax())]
            elif ious[row].max() <= bg_threshold:
                kind, target = "Bkg", None
            else:
                kind, target = "Both", None
            record.update(type=kind, target_gt=int(target["id"]) if target is not None else None)
            errors.append(record)
            if kind in ("Cls", "Loc") and target["id"] not in used_gt:
                best = best_for_gt.get(target["id"])
                if best is None or det["score"] > best[0]:
                    best_for_gt[target["id"]] = (float(det["score"]), record["detection"])

    for image_id in params.imgIds:
        objects, _ = _image_gts(gt, image_id)
        for obj in objects:
            if obj["id"] not in used_gt and obj["id"] not in best_for_gt:
                errors.append({"type": "Miss", "gt": int(obj["id"]), "image_id": int(image_id),
                               "category_id": int(obj["category_id"])})

    base = _ap50(gt, results)
    delta = {}
    for kind in ERROR_TYPES:
        these = [e for e in errors if e["type"] == kind]
        if not these:
            delta[kind] = 0.0
            continue
        fixed_gt, fixed_results = _fix(gt, results, these, best_for_gt)
        delta[kind] = max(0.0, _ap50(fixed_gt, fixed_results) - base) * 100
    counts = {kind: sum(1 for e in errors if e["type"] == kind) for kind in ERROR_TYPES}
    return {"ap50": base * 100, "dAP": delta, "counts": counts, "errors": errors,
            "pos_threshold": pos_threshold, "bg_threshold": bg_threshold}


def _fix(gt: Any, results: List[dict], errors: List[Dict[str, Any]],
         best_for_gt: Dict[int, Tuple[float, int]]) -> Tuple[Any, List[dict]]:
    """Ground truth and results with ``errors`` (all of one type) fixed by the oracle."""
    if errors[0]["type"] == "Miss":
        missed = {e["gt"] for e in errors}
        dataset = dict(gt.dataset)
        dataset["annotations"] = [a for a in gt.dataset["annotations"] if a["id"] not in missed]
        return dataset, results
    fixed = list(results)
    remove = set()
    for error in errors:
        index = error["detection"]
        target = error.get("target_gt")
        if error["type"] in ("Cls", "Loc") and best_for_gt.get(target, (None, None))[1] == index:
            truth = gt.anns[target]
            fixed[index] = dict(fixed[index], category_id=truth["category_id"], bbox=list(truth["bbox"]))
        else:
            remove.add(index)
    return gt, [r for i, r in enumerate(fixed) if i not in remove]


def format_error_table(breakdown: Mapping[str, Any]) -> str:
    """``type  meaning  count  dAP50`` rows."""
    lines = [f"error breakdown (TIDE, Bolya et al. 2020; IoU fg {breakdown['pos_threshold']}, "
             f"bg {breakdown['bg_threshold']}); AP50 = {breakdown['ap50']:.2f}",
             f"{'type':<5}  {'error':<15}  {'count':>6}  {'dAP50':>6}"]
    for kind in ERROR_TYPES:
        lines.append(f"{kind:<5}  {ERROR_NAMES[kind]:<15}  {breakdown['counts'][kind]:>6}  "
                     f"{breakdown['dAP'][kind]:>6.2f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ confusion matrix


def confusion_matrix(coco_gt: Any, results: Union[Sequence[dict], PathLike], score_threshold: float = 0.5,
                     iou_threshold: float = 0.5, class_names: Optional[Mapping[int, str]] = None) -> Dict[str, Any]:
    """Class confusion at one operating point.

    Per image, detections with ``score >= score_threshold`` and ground-truth objects (crowd regions aside)
    are paired one-to-one, class-agnostically, by descending IoU while IoU >= ``iou_threshold``. Rows are
    the ground-truth class, columns the predicted class; the last row/column is background: a
    detection paired with no object (and not inside a crowd region) counts in row *background*, an object
    paired with no detection in column *background*.

    Returns ``{"classes": [names..., "background"], "category_ids", "matrix": [[int]], "score_threshold",
    "iou_threshold", "rows": "ground truth", "columns": "prediction", "errors_per_image": {image id: n}}``.
    """
    gt = _gt(coco_gt)
    results = _load_results(results)
    category_ids = sorted(int(c) for c in gt.getCatIds())
    index = {c: i for i, c in enumerate(category_ids)}
    background = len(category_ids)
    matrix = np.zeros((background + 1, background + 1), dtype=np.int64)
    by_image: Dict[int, List[dict]] = defaultdict(list)
    for r in results:
        if r["score"] >= score_threshold and int(r["category_id"]) in index:
            by_image[int(r["image_id"])].append(r)
    errors_per_image: Dict[int, int] = {}
    pairs_per_image: Dict[int, Dict[str, Any]] = {}
    for image_id in sorted(int(i) for i in gt.getImgIds()):
        objects, crowds = _image_gts(gt, image_id)
        dets = sorted(by_image.get(image_id, []), key=lambda r: -r["score"])
        ious = _ious([d["bbox"] for d in dets], [o["bbox"] for o in objects])
        order = np.dstack(np.unravel_index(np.argsort(-ious, axis=None, kind="stable"), ious.shape))[0] \
            if ious.size else np.zeros((0, 2), dtype=np.int64)
        det_match, obj_match = {}, {}
        for d, o in order:
            if ious[d, o] < iou_threshold:
                break
            if d in det_match or o in obj_match:
                continue
            det_match[int(d)], obj_match[int(o)] = int(o), int(d)
        crowd_iof = _ious([d["bbox"] for d in dets], [c["bbox"] for c in crowds], crowd=True)
        errors = 0
        for o, obj in enumerate(objects):
            truth = index[int(obj["category_id"])]
            if o in obj_match:
                predicted = index[int(dets[obj_match[o]]["category_id"])]
                matrix[truth, predicted] += 1
                errors += predicted != truth
            else:
                matrix[truth, background] += 1
                errors += 1
        for d, det in enumerate(dets):
            if d in det_match or (crowd_iof.shape[1] and crowd_iof[d].max() >= iou_threshold):
                continue
            matrix[background, index[int(det["category_id"])]] += 1
            errors += 1
        errors_per_image[image_id] = int(errors)
        pairs_per_image[image_id] = {"detections": dets, "objects": objects, "det_match": det_match}
    names = _class_names(gt, class_names)
    return {
        "classes": [names[c] for c in category_ids] + ["background"],
        "category_ids": category_ids + [None],
        "rows": "ground truth", "columns": "prediction",
        "score_threshold": score_threshold, "iou_threshold": iou_threshold,
        "matrix": matrix.tolist(),
        "errors_per_image": errors_per_image,
        "_pairs": pairs_per_image,
    }


# ------------------------------------------------------------------------------------------------ plots


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


def plot_pr_curves(evaluator: Any, names: Dict[int, str], path: Path, max_classes: int = 35) -> Path:
    """Per class (most ground truth first, up to ``max_classes``) precision vs recall at IoU 0.5 and averaged
    over 0.50:0.95, from ``eval['precision']`` (area all, 100 detections); the first panel is the class mean."""
    plt = _pyplot()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # [T, R, K]
    recall = evaluator.params.recThrs
    t50 = _iou_index(evaluator, 0.5)
    cat_ids = list(evaluator.params.catIds)
    gt_counts = {c: len(evaluator.cocoGt.getAnnIds(catIds=[c], iscrowd=False)) for c in cat_ids}
    order = sorted(range(len(cat_ids)), key=lambda k: -gt_counts[cat_ids[k]])[:max_classes]

    def curves(k: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
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
    fig.suptitle("precision-recall (COCOeval, area all, 100 detections per image)", fontsize=10)
    return _save_figure(plt, fig, path)


@contextlib.contextmanager
def _quiet_nan():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def per_class_ap(evaluator: Any, names: Dict[int, str]) -> Dict[str, Dict[str, Optional[float]]]:
    """``{name: {"AP": AP@[.5:.95], "AP50": AP@.5}}`` from ``eval['precision']`` (None: no GT)."""
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    t50 = _iou_index(evaluator, 0.5)
    return {names[c]: {"AP": _mean_ap(precision[:, :, k]), "AP50": _mean_ap(precision[t50, :, k])}
            for k, c in enumerate(evaluator.params.catIds)}


def plot_per_class_ap(table: Dict[str, Dict[str, Optional[float]]], path: Path) -> Path:
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


# ------------------------------------------------------------------------------------------------ gallery


def write_gallery(gt: Any, confusion: Mapping[str, Any], images_dir: PathLike, out: Path, count: int,
                  names: Dict[int, str], exif_orientation: str = "apply",
                  allow_outside_images: bool = False) -> List[Path]:
    """The ``count`` images with the most errors at the confusion operating point: ground truth (left) and
    detections (right; green correct, orange wrong class, red background; missed objects dashed blue)."""
    import cv2

    from .data.checks import PathOutsideImagesError, resolve_image_path
    from .preprocess import ImageReadError, load_image
    from .visualize import draw_boxes, side_by_side

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


# ------------------------------------------------------------------------------------------------ all


def analyze(coco_gt: Any, results: Union[Sequence[dict], PathLike], out_dir: PathLike, *,
            images_dir: Optional[PathLike] = None, class_names: Optional[Mapping[int, str]] = None,
            score_threshold: float = 0.5, iou_threshold: float = 0.5, gallery: int = 8,
            exif_orientation: str = "apply", allow_outside_images: bool = False) -> Dict[str, Any]:
    """Write the error analysis next to ``metrics.json`` in ``out_dir``:

    ``pr_curves.png``, ``per_class_ap.png``, ``confusion_matrix.png`` + ``.json``, ``errors.png`` +
    ``errors.json`` (TIDE table; ``errors.txt`` the same as text) and, with ``images_dir``,
    ``gallery/NN_<image>.jpg`` for the ``gallery`` images with the most errors (read with ``exif_orientation``,
    as the boxes were scored; a ``file_name`` leaving ``images_dir`` is skipped unless ``allow_outside_images``).
    Returns ``{"files": [...], "errors": breakdown without the per-error list, "confusion": ...}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gt = _gt(coco_gt)
    results = _load_results(results)
    names = _class_names(gt, class_names)
    evaluator = run_cocoeval(gt, results)
    breakdown = error_breakdown(gt, results, evaluator)
    confusion = confusion_matrix(gt, results, score_threshold, iou_threshold, class_names)
    table = per_class_ap(evaluator, names)

    from .fileio import write_json_atomic

    files = [plot_pr_curves(evaluator, names, out / "pr_curves.png"),
             plot_per_class_ap(table, out / "per_class_ap.png"),
             plot_confusion_matrix(confusion, out / "confusion_matrix.png"),
             plot_errors(breakdown, out / "errors.png")]
    public_confusion = {k: v for k, v in confusion.items() if not k.startswith("_")}
    public_confusion["errors_per_image"] = {str(k): v for k, v in confusion["errors_per_image"].items()}
    write_json_atomic(out / "confusion_matrix.json", public_confusion)
    summary = {k: v for k, v in breakdown.items() if k != "errors"}
    summary["per_class"] = table
    write_json_atomic(out / "errors.json", summary)
    (out / "errors.txt").write_text(format_error_table(breakdown) + "\n", encoding="utf-8")
    files += [out / "confusion_matrix.json", out / "errors.json", out / "errors.txt"]
    if images_dir is not None and gallery > 0:
        files += write_gallery(gt, confusion, images_dir, out / "gallery", gallery, names, exif_orientation,
                               allow_outside_images)
    return {"files": [str(f) for f in files], "errors": summary, "confusion": public_confusion}
