"""The one COCOeval path: ground truth and COCO results in, one COCOeval run (pycocotools or faster-coco-eval) out.

:func:`evaluate_results` loads the results, builds the detections COCO, maps category ids to class names and runs
COCOeval; :mod:`effdet.evaluation` (the 12 stats and per-class AP: validation, ``tools/eval.py``) and
:mod:`effdet.evaluation.analysis` (PR curves, TIDE errors, confusion) read what it returns.

* Ground truth: a COCO object of either implementation, a COCO dict or a JSON path; dicts and files are read as the
  official COCO tools read them (:func:`official_ground_truth`): boxes as written, every image.
* Results: COCO result dicts (``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]`` in original-image pixels,
  ``score``) or a JSON path to them. They are copied: COCO's in-place additions (``id``, ``area``, ...) never reach
  the caller's dicts. The i-th result becomes detection id ``i + 1`` (pycocotools' ``loadRes`` numbering).
* ``coco_eval`` (config ``eval.coco_eval``, ``effdet-eval --coco-eval``) picks the implementation, one of
  :data:`~effdet.choices.COCO_EVALUATORS`: ``pycocotools`` (reference) or ``faster_coco_eval`` (C++ evaluate and
  accumulate, the same numbers roughly 10x faster; ``pip install faster-coco-eval``).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np

from ..choices import COCO_EVALUATORS
from ..types import PathLike

logger = logging.getLogger("effdet.evaluation")


__all__ = ["COCO_EVALUATORS", "COCO_MAX_DETS", "CocoEvalRun", "category_names", "coco_max_dets", "evaluate_results",
           "load_coco_gt", "load_results", "official_ground_truth", "summary_stats"]

COCO_MAX_DETS = 100  # COCO's largest maxDets; never less (eval.max_detections above it raises it)


def coco_max_dets(max_detections: Optional[int] = None) -> int:
    """The largest maxDets COCOeval scores with: ``max(100, max_detections)``, so that a model allowed more than 100
    detections per image (``eval.max_detections``, dense scenes) is not cut at COCO's 100."""
    return max(COCO_MAX_DETS, int(max_detections or COCO_MAX_DETS))


def coco_eval_argument(coco_eval: str, backend: Optional[str], function: str) -> str:
    """The evaluator a caller asked for: ``coco_eval``, or the deprecated ``backend=`` argument of ``function``
    (accepted for one release, with a FutureWarning)."""
    if backend is None:
        return coco_eval
    warnings.warn(f"{function}(backend=...) is deprecated and will be removed in the next release: "
                  f"use coco_eval={backend!r}", FutureWarning, stacklevel=3)
    if coco_eval not in ("pycocotools", backend):
        raise ValueError(f"{function}: backend={backend!r} (deprecated) and coco_eval={coco_eval!r} disagree; "
                         "pass coco_eval only")
    return backend


def evaluator_classes(coco_eval: str) -> tuple[type, type]:
    """``(COCO class, COCOeval class)`` of a COCO evaluator (one of :data:`COCO_EVALUATORS`)."""
    if coco_eval == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if coco_eval == "faster_coco_eval":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError as error:
            raise ImportError(
                "COCO evaluator 'faster_coco_eval' needs the faster-coco-eval package: pip install faster-coco-eval"
            ) from error
        return COCO, COCOeval_faster
    raise ValueError(f"unknown COCO evaluator {coco_eval!r}; choose one of {COCO_EVALUATORS}")


def official_ground_truth(dataset: Mapping[str, Any]) -> dict:
    """The ground truth the official COCO tools score against: the annotation dict as ``pycocotools.coco.COCO(path)``
    loads it. Every image (also those without boxes, or whose file is missing: their objects are misses), every
    annotation with its ``bbox`` ``[x, y, w, h]`` as written (not clipped to its image), ``iscrowd`` and ``area``
    as in the file.

    Only what COCOeval cannot score at all is adapted (the dicts in ``dataset`` are not modified): an annotation
    without ``area`` gets ``w * h`` of its box (COCOeval needs one), and one whose ``bbox`` is not 4 finite
    numbers (:func:`effdet.data.checks.boxes.is_plain_bbox`) is left out (logged; ``tools/check_data.py`` names it).
    """
    from ..data.checks.boxes import is_plain_bbox

    kept, dropped = [], []
    for ann in dataset.get("annotations", []):
        bbox = ann.get("bbox") if isinstance(ann, Mapping) else None
        if not is_plain_bbox(bbox):
            dropped.append(ann.get("id") if isinstance(ann, Mapping) else ann)
            continue
        kept.append(ann if "area" in ann else dict(ann, area=float(bbox[2]) * float(bbox[3])))
    if dropped:
        logger.warning("ground truth: %d annotations whose bbox is not 4 finite numbers cannot be scored and are left "
                       "out (ids %s); tools/check_data.py lists them", len(dropped), dropped[:10])
    official = dict(dataset)
    official["annotations"] = kept
    return official


def _coco_index(coco_cls: type, dataset: dict) -> Any:
    """A COCO index object of ``coco_cls`` around an in-memory dataset dict (built quietly)."""
    coco = coco_cls()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco_gt(coco_gt: Any, coco_eval: str = "pycocotools", *, backend: Optional[str] = None) -> Any:
    """A ground-truth COCO object of ``coco_eval``'s own class.

    ``coco_gt`` may be a JSON path or a COCO-format dict (read as :func:`official_ground_truth` says), or a COCO
    object of either implementation (used as it is; re-indexed around the same dataset dict when the class differs,
    the annotations are not copied). ``backend``: the deprecated name of ``coco_eval``.
    """
    coco_eval = coco_eval_argument(coco_eval, backend, "load_coco_gt")
    coco_cls, _ = evaluator_classes(coco_eval)
    if isinstance(coco_gt, coco_cls):
        return coco_gt
    if isinstance(coco_gt, (str, os.PathLike)):
        with open(coco_gt) as handle:
            dataset = official_ground_truth(json.load(handle))
    elif isinstance(coco_gt, Mapping):
        dataset = official_ground_truth(coco_gt)
    elif hasattr(coco_gt, "dataset") and isinstance(coco_gt.dataset, dict):
        dataset = coco_gt.dataset
    else:
        raise TypeError(f"coco_gt must be a COCO object, a COCO dict or a JSON path, not {type(coco_gt).__name__}")
    return _coco_index(coco_cls, dataset)


def load_results(results: Union[Sequence[dict], PathLike]) -> list[dict]:
    """COCO result dicts (or a JSON path to them) as fresh copies (their ``bbox`` lists too), so that nothing done
    to them reaches the caller's."""
    if isinstance(results, (str, os.PathLike)):
        with open(results) as handle:
            results = json.load(handle)
    if not isinstance(results, list):
        raise TypeError(f"results must be a list of COCO result dicts or a JSON path, not {type(results).__name__}")
    return [dict(r, bbox=list(r["bbox"])) if "bbox" in r else dict(r) for r in results]


def _detections_coco(gt: Any, results: list[dict]) -> Any:
    """The detections as a COCO object of ``gt``'s class; ``loadRes`` adds its fields to copies of the dicts. An
    empty list gives an empty (but evaluable) index."""
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return gt.loadRes([dict(r) for r in results])
    dataset = {"images": list(gt.dataset.get("images", [])), "categories": list(gt.dataset.get("categories", [])),
               "annotations": []}
    return _coco_index(type(gt), dataset)


def category_names(gt: Any, class_names: Union[Mapping[int, str], Sequence[str], None] = None) -> dict[int, str]:
    """``category id -> class name`` for every ground-truth category: the GT's own ``name``, replaced by
    ``class_names``: a ``{category_id: name}`` mapping, or a sequence aligned with the sorted GT category ids."""
    category_ids = sorted(int(c) for c in gt.getCatIds())
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt.loadCats(category_ids)}
    if isinstance(class_names, Mapping):
        names.update({int(k): str(v) for k, v in class_names.items() if int(k) in names})
    elif class_names is not None:
        if len(class_names) != len(category_ids):
            raise ValueError(
                f"class_names has {len(class_names)} names but the ground truth has {len(category_ids)} "
                "categories; pass a {category_id: name} mapping instead"
            )
        names = dict(zip(category_ids, map(str, class_names)))
    return {cid: names[cid] for cid in category_ids}


@dataclass
class CocoEvalRun:
    """One COCOeval run.

    ``gt``: the ground-truth COCO object; ``results``: the result dicts as loaded (copies; the i-th is detection id
    ``i + 1`` in ``evaluator.cocoDt``); ``evaluator``: the COCOeval object after ``evaluate()`` and ``accumulate()``
    (and ``summarize()``, whose 12 numbers are ``evaluator.stats``, when asked); ``names``: ``category id -> class
    name`` of every GT category (:func:`category_names`).
    """

    gt: Any
    results: list[dict]
    evaluator: Any
    names: dict[int, str]


def evaluate_results(
    coco_gt: Any,
    results: Union[Sequence[dict], PathLike],
    *,
    coco_eval: str = "pycocotools",
    class_names: Union[Mapping[int, str], Sequence[str], None] = None,
    image_ids: Optional[Sequence[int]] = None,
    iou_thresholds: Optional[Sequence[float]] = None,
    all_areas_only: bool = False,
    summarize: bool = False,
    max_dets: int = COCO_MAX_DETS,
) -> CocoEvalRun:
    """Run COCOeval (``iouType="bbox"``) of ``results`` against ``coco_gt``, quietly.

    Args:
        coco_gt: ground truth (see :func:`load_coco_gt`).
        results: COCO result dicts (``bbox`` ``[x, y, w, h]`` pixels) or a JSON path; may be empty.
        coco_eval: ``"pycocotools"`` or ``"faster_coco_eval"``.
        class_names: names for :attr:`CocoEvalRun.names` (see :func:`category_names`).
        image_ids: evaluate only these images (default: every GT image); images without results count as misses.
        iou_thresholds: default COCO's 0.50:0.05:0.95. all_areas_only: one area range, 'all'.
        summarize: also compute the 12 stats (:func:`summary_stats`) into ``evaluator.stats``.
        max_dets: the largest maxDets (``params.maxDets = [1, 10, max_dets]``); raised to COCO's 100 when below
            (:func:`coco_max_dets`). AP, per-class AP and AR100 are scored with it.

    Raises:
        ValueError: results of images that are not in the ground truth, or ``image_ids`` that are not.
    """
    gt = load_coco_gt(coco_gt, coco_eval)
    _, eval_cls = evaluator_classes(coco_eval)
    loaded = load_results(results)
    gt_image_ids = {int(i) for i in gt.getImgIds()}
    unknown = sorted({int(r["image_id"]) for r in loaded} - gt_image_ids)
    if unknown:
        raise ValueError(f"{len(unknown)} result image ids are not in the ground truth (first: {unknown[:5]})")
    names = category_names(gt, class_names)
    dt = _detections_coco(gt, loaded)
    if coco_eval == "faster_coco_eval":
        evaluator = eval_cls(gt, dt, iouType="bbox", print_function=lambda *args, **kwargs: None)
    else:
        evaluator = eval_cls(gt, dt, iouType="bbox")
    if image_ids is not None:
        image_ids = sorted({int(i) for i in image_ids})
        missing = [i for i in image_ids if i not in gt_image_ids]
        if missing:
            raise ValueError(f"{len(missing)} image_ids are not in the ground truth (first: {missing[:5]})")
        evaluator.params.imgIds = image_ids
    if iou_thresholds is not None:
        evaluator.params.iouThrs = np.asarray(iou_thresholds, dtype=np.float64)
    if all_areas_only:
        evaluator.params.areaRng = [evaluator.params.areaRng[0]]
        evaluator.params.areaRngLbl = ["all"]
    evaluator.params.maxDets = [1, 10, coco_max_dets(max_dets)]
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator.evaluate()
        evaluator.accumulate()
    if summarize:
        # computed here rather than by summarize(): pycocotools' summarize() scores AP at maxDets=100 whatever
        # params.maxDets says (and -1 when 100 is not one of them)
        evaluator.stats = summary_stats(evaluator)
    return CocoEvalRun(gt, loaded, evaluator, names)


def summary_stats(evaluator: Any) -> np.ndarray:
    """The 12 COCO stats (``AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl``, COCOeval.summarize()'s order and
    definitions: the mean of the defined entries, -1 where none is) of an accumulated evaluator with
    ``params.maxDets = [1, 10, M]``; every AP and AR except AR1/AR10 is at ``M``, the largest ("AR100" is AR at M)."""
    params = evaluator.params
    max_dets = list(params.maxDets)
    areas = list(params.areaRngLbl)

    def stat(precision: bool, iou: Optional[float] = None, area: str = "all", dets: int = max_dets[-1]) -> float:
        values = evaluator.eval["precision" if precision else "recall"]  # [T, R, K, A, M] / [T, K, A, M]
        if iou is not None:
            values = values[[iou_index(evaluator, iou)]]
        values = values[..., areas.index(area), max_dets.index(dets)]
        defined = values[values > -1]
        return float(defined.mean()) if defined.size else -1.0

    return np.asarray([
        stat(True), stat(True, 0.5), stat(True, 0.75),
        stat(True, area="small"), stat(True, area="medium"), stat(True, area="large"),
        stat(False, dets=max_dets[0]), stat(False, dets=max_dets[1]), stat(False),
        stat(False, area="small"), stat(False, area="medium"), stat(False, area="large"),
    ])


# ------------------------------------------------------------------------------ reading eval['precision']


def mean_defined(values: np.ndarray) -> Optional[float]:
    """Mean of the entries COCOeval marks as defined (> -1); None when there are none (no ground truth)."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else None


def iou_index(evaluator: Any, iou: float) -> int:
    """Index of IoU threshold ``iou`` in ``evaluator.params.iouThrs`` (ValueError when it is not one)."""
    found = np.flatnonzero(np.isclose(evaluator.params.iouThrs, iou))
    if not len(found):
        raise ValueError(f"IoU {iou} is not one of the COCOeval thresholds {list(evaluator.params.iouThrs)}")
    return int(found[0])


def precision_all_areas(evaluator: Any) -> np.ndarray:
    """``eval['precision']`` at area 'all' and the largest maxDets: ``[T iou, R recall, K class]``, -1 where
    undefined."""
    area_all = list(evaluator.params.areaRngLbl).index("all")
    return evaluator.eval["precision"][:, :, :, area_all, -1]
