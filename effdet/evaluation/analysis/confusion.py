"""Class confusion of detections against COCO ground truth at one operating point (score and IoU thresholds).

Boxes: COCO results ``bbox`` ``[x, y, w, h]`` in original-image pixels.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np

from ..cocoeval import PathLike, category_names, load_coco_gt, load_results

from .errors import box_ious, image_ground_truth


def confusion_matrix(coco_gt: Any, results: Union[Sequence[dict], PathLike], score_threshold: float = 0.5,
                     iou_threshold: float = 0.5, class_names: Optional[Mapping[int, str]] = None) -> dict[str, Any]:
    """Class confusion at one operating point.

    Per image, detections with ``score >= score_threshold`` and ground-truth objects (crowd regions aside)
    are paired one-to-one, class-agnostically, by descending IoU while IoU >= ``iou_threshold``. Rows are
    the ground-truth class, columns the predicted class; the last row/column is background: a
    detection paired with no object (and not inside a crowd region) counts in row *background*, an object
    paired with no detection in column *background*.

    Returns ``{"classes": [names..., "background"], "category_ids", "matrix": [[int]], "score_threshold",
    "iou_threshold", "rows": "ground truth", "columns": "prediction", "errors_per_image": {image id: n}}``.
    """
    gt = load_coco_gt(coco_gt)
    results = load_results(results)
    category_ids = sorted(int(c) for c in gt.getCatIds())
    index = {c: i for i, c in enumerate(category_ids)}
    background = len(category_ids)
    matrix = np.zeros((background + 1, background + 1), dtype=np.int64)
    by_image: dict[int, list[dict]] = defaultdict(list)
    for r in results:
        if r["score"] >= score_threshold and int(r["category_id"]) in index:
            by_image[int(r["image_id"])].append(r)
    errors_per_image: dict[int, int] = {}
    pairs_per_image: dict[int, dict[str, Any]] = {}
    for image_id in sorted(int(i) for i in gt.getImgIds()):
        objects, crowds = image_ground_truth(gt, image_id)
        dets = sorted(by_image.get(image_id, []), key=lambda r: -r["score"])
        ious = box_ious([d["bbox"] for d in dets], [o["bbox"] for o in objects])
        order = np.dstack(np.unravel_index(np.argsort(-ious, axis=None, kind="stable"), ious.shape))[0] \
            if ious.size else np.zeros((0, 2), dtype=np.int64)
        det_match, obj_match = {}, {}
        for d, o in order:
            if ious[d, o] < iou_threshold:
                break
            if d in det_match or o in obj_match:
                continue
            det_match[int(d)], obj_match[int(o)] = int(o), int(d)
        crowd_iof = box_ious([d["bbox"] for d in dets], [c["bbox"] for c in crowds], crowd=True)
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
    names = category_names(gt, class_names)
    return {
        "classes": [names[c] for c in category_ids] + ["background"],
        "category_ids": category_ids + [None],
        "rows": "ground truth", "columns": "prediction",
        "score_threshold": score_threshold, "iou_threshold": iou_threshold,
        "matrix": matrix.tolist(),
        "errors_per_image": errors_per_image,
        "_pairs": pairs_per_image,
    }
