"""TIDE-style error breakdown of detections against COCO ground truth.

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
The fixed sets are scored by COCOeval again (:func:`effdet.evaluation.cocoeval.evaluate_results`; IoU 0.5, all areas, 100
detections), so ``dAP`` is in the same units as COCO's AP50. Negative differences (interpolation effects) are
reported as 0, as TIDE does.

Boxes: COCO results ``bbox`` ``[x, y, w, h]`` in original-image pixels.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence, Union

import numpy as np

from ..cocoeval import (PathLike, evaluate_results, iou_index, load_coco_gt, load_results, mean_defined,
                             precision_all_areas)

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Miss")
ERROR_NAMES = {"Cls": "classification", "Loc": "localisation", "Both": "cls + loc", "Dupe": "duplicate",
               "Bkg": "background", "Miss": "missed"}


def _ap50(gt: Any, results: list[dict], max_dets: int = 100) -> float:
    """COCO AP at IoU 0.5 (all areas, ``max(100, max_dets)`` detections), averaged over classes with ground truth."""
    evaluator = evaluate_results(gt, results, iou_thresholds=[0.5], all_areas_only=True, max_dets=max_dets).evaluator
    precision = precision_all_areas(evaluator)[0]  # [R, K]
    per_class = [mean_defined(precision[:, k]) for k in range(precision.shape[1])]
    defined = [ap for ap in per_class if ap is not None]
    return float(np.mean(defined)) if defined else 0.0


def image_ground_truth(gt: Any, image_id: int) -> tuple[list[dict], list[dict]]:
    """(objects, crowd regions) of an image: COCOeval's 'ignore' flag counts as crowd."""
    anns = gt.imgToAnns.get(image_id, [])
    objects = [a for a in anns if not a.get("iscrowd") and not a.get("ignore")]
    crowds = [a for a in anns if a.get("iscrowd") or a.get("ignore")]
    return objects, crowds


def box_ious(boxes: Sequence[Sequence[float]], others: Sequence[Sequence[float]], crowd: bool = False) -> np.ndarray:
    """``[len(boxes), len(others)]`` IoU of xywh boxes (pycocotools.mask.iou; crowd: intersection over box)."""
    from pycocotools import mask as mask_utils

    if not len(boxes) or not len(others):
        return np.zeros((len(boxes), len(others)))
    values = mask_utils.iou([list(map(float, b)) for b in boxes], [list(map(float, o)) for o in others],
                            [int(crowd)] * len(others))
    return np.asarray(values, dtype=np.float64).reshape(len(boxes), len(others))


def error_breakdown(coco_gt: Any, results: Union[Sequence[dict], PathLike], evaluator: Any = None,
                    pos_threshold: float = 0.5, bg_threshold: float = 0.1) -> dict[str, Any]:
    """TIDE-style main errors (see the module docstring).

    Args:
        coco_gt: ground truth (COCO object, dict or JSON path).
        results: COCO results (list or JSON path), in the order ``evaluator`` was built with.
        evaluator: a ``run_cocoeval(coco_gt, results)`` to reuse (must include IoU ``pos_threshold``).

    Returns:
        ``{"ap50": AP50 (0..100), "dAP": {type: points}, "counts": {type: n}, "errors": [per error:
        type, detection index or gt id, image id, target gt id]}``.
    """
    if evaluator is None:
        run = evaluate_results(coco_gt, results)
        gt, results, evaluator = run.gt, run.results, run.evaluator
    else:
        gt, results = load_coco_gt(coco_gt), load_results(results)
    t = iou_index(evaluator, pos_threshold)
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

    errors: list[dict[str, Any]] = []
    best_for_gt: dict[int, tuple[float, int]] = {}  # unused GT id -> (score, dt id) of its best Cls/Loc error
    cache: dict[int, tuple[list[dict], np.ndarray]] = {}
    for image_id, category_id, dt_ids, matched, ignored in evaluated:
        if image_id not in cache:
            objects, _ = image_ground_truth(gt, image_id)
            cache[image_id] = (objects, np.array([int(o["category_id"]) for o in objects]))
        objects, gt_cats = cache[image_id]
        false_ids = [d for d, m, g in zip(dt_ids, matched, ignored) if not m and not g]
        if not false_ids:
            continue
        dts = [evaluator.cocoDt.anns[d] for d in false_ids]
        ious = box_ious([d["bbox"] for d in dts], [o["bbox"] for o in objects])
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
        objects, _ = image_ground_truth(gt, image_id)
        for obj in objects:
            if obj["id"] not in used_gt and obj["id"] not in best_for_gt:
                errors.append({"type": "Miss", "gt": int(obj["id"]), "image_id": int(image_id),
                               "category_id": int(obj["category_id"])})

    max_dets = int(evaluator.params.maxDets[-1])  # the run's: 100, or more for dense images
    base = _ap50(gt, results, max_dets)
    delta = {}
    for kind in ERROR_TYPES:
        these = [e for e in errors if e["type"] == kind]
        if not these:
            delta[kind] = 0.0
            continue
        fixed_gt, fixed_results = _fix(gt, results, these, best_for_gt)
        delta[kind] = max(0.0, _ap50(fixed_gt, fixed_results, max_dets) - base) * 100
    counts = {kind: sum(1 for e in errors if e["type"] == kind) for kind in ERROR_TYPES}
    return {"ap50": base * 100, "dAP": delta, "counts": counts, "errors": errors,
            "pos_threshold": pos_threshold, "bg_threshold": bg_threshold}


def _fix(gt: Any, results: list[dict], errors: list[dict[str, Any]],
         best_for_gt: dict[int, tuple[float, int]]) -> tuple[Any, list[dict]]:
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
