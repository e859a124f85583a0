"""COCO box evaluation: detections -> COCO results -> the 12 COCO stats plus per-class AP.

Conventions (docs/architecture.md):

* Detections enter as one dict per image with ``boxes`` ``[K, 4]`` absolute ``xyxy`` pixels in the
  ORIGINAL image, ``scores`` ``[K]`` and ``labels`` ``[K]`` contiguous ``0..C-1``. They leave as COCO
  result dicts (``image_id``, ``category_id`` = the dataset's own id, ``bbox`` ``xywh``, ``score``).
* Metrics are plain floats in ``0..1`` under :data:`STAT_KEYS`, plus ``per_class`` mapping class name
  to AP@[0.50:0.95] (all areas, 100 detections).
* **-1.0 means "not defined"**: COCOeval reports -1 for an area range (or a class) that has no ground
  truth. We keep -1.0 for the 12 stats (JSON-friendly, and what every COCO tool prints) and use
  ``None`` (JSON ``null``) for classes without ground truth in ``per_class``. Consumers of
  ``metrics.json`` must treat negative stats as "no GT in this range", not as a score.
* Every ground-truth image (or every id in ``image_ids``) is evaluated; an image without detections
  counts as misses for its objects. Empty results are evaluated normally (AP 0 where GT exists).
* The ground truth is the annotation file as the official COCO tools load it (:func:`official_ground_truth`):
  boxes as written (not clipped to their image), every image (also those without boxes or whose file is
  missing), crowd flags and areas as in the file. ``tools/eval.py --weights``, ``--results`` and training's
  validation all score against it, so they give the same numbers for the same detections.

Two backends give the same numbers: ``pycocotools`` (reference) and ``faster_coco_eval``
(C++ evaluate/accumulate, roughly 10x faster; ``pip install faster-coco-eval``).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import numbers
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch

from .boxes import xyxy_to_xywh
from .choices import EVAL_BACKENDS
from .types import Detections, PathLike
from .fileio import write_json_atomic  # noqa: F401  (part of this module's API)

logger = logging.getLogger(__name__)

STAT_KEYS: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)
BACKENDS = EVAL_BACKENDS  # the name this module has always exported

# (title, IoU range, area, maxDets) of each stat, in COCOeval.summarize() order.
_STAT_LAYOUT: tuple[tuple[str, str, str, int], ...] = (
    ("Average Precision  (AP)", "0.50:0.95", "all", 100),
    ("Average Precision  (AP)", "0.50", "all", 100),
    ("Average Precision  (AP)", "0.75", "all", 100),
    ("Average Precision  (AP)", "0.50:0.95", "small", 100),
    ("Average Precision  (AP)", "0.50:0.95", "medium", 100),
    ("Average Precision  (AP)", "0.50:0.95", "large", 100),
    ("Average Recall     (AR)", "0.50:0.95", "all", 1),
    ("Average Recall     (AR)", "0.50:0.95", "all", 10),
    ("Average Recall     (AR)", "0.50:0.95", "all", 100),
    ("Average Recall     (AR)", "0.50:0.95", "small", 100),
    ("Average Recall     (AR)", "0.50:0.95", "medium", 100),
    ("Average Recall     (AR)", "0.50:0.95", "large", 100),
)



# ---------------------------------------------------------------------------------------------
# detections -> COCO results
# ---------------------------------------------------------------------------------------------

def _to_numpy(values: Any) -> np.ndarray:
    """Tensor (any device) / array / list -> numpy array on the host."""
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def detections_to_coco_results(
    image_ids: Sequence[int],
    detections: Sequence[Detections],
    category_ids: Sequence[int],
    *,
    box_decimals: int = 2,
    score_decimals: int = 5,
) -> list[dict]:
    """Convert per-image detections into COCO result dicts.

    Args:
        image_ids: the dataset image id of each entry of ``detections``.
        detections: per image, ``boxes`` ``[K, 4]`` xyxy in original-image pixels, ``scores`` ``[K]``,
            ``labels`` ``[K]`` contiguous class indices ``0..C-1`` (tensors on any device or arrays).
        category_ids: ``category_ids[label]`` is the dataset's category id of class ``label``.
        box_decimals / score_decimals: rounding of ``bbox`` (1/100 px) and ``score`` in the output.

    Returns:
        ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]`` in input order.
    """
    if len(image_ids) != len(detections):
        raise ValueError(f"got {len(image_ids)} image ids for {len(detections)} detection dicts")
    category_lookup = np.asarray([int(c) for c in category_ids], dtype=np.int64)
    results: list[dict] = []
    for image_id, det in zip(image_ids, detections):
        boxes = _to_numpy(det["boxes"]).astype(np.float64).reshape(-1, 4)
        scores = _to_numpy(det["scores"]).astype(np.float64).reshape(-1)
        labels = _to_numpy(det["labels"]).astype(np.int64).reshape(-1)
        if not (len(boxes) == len(scores) == len(labels)):
            raise ValueError(
                f"image {int(image_id)}: boxes {len(boxes)}, scores {len(scores)} and labels {len(labels)} "
                "must have the same length"
            )
        if len(labels) and (labels.min() < 0 or labels.max() >= len(category_lookup)):
            raise ValueError(
                f"image {int(image_id)}: label {int(labels.min() if labels.min() < 0 else labels.max())} "
                f"is outside 0..{len(category_lookup) - 1} (len(category_ids) = {len(category_lookup)})"
            )
        xywh = xyxy_to_xywh(boxes).round(box_decimals)
        scores = scores.round(score_decimals)
        cats = category_lookup[labels]
        image_id = int(image_id)
        results.extend(
            {"image_id": image_id, "category_id": int(c), "bbox": b.tolist(), "score": float(s)}
            for b, s, c in zip(xywh, scores, cats)
        )
    return results


# ---------------------------------------------------------------------------------------------
# loading GT / results for a backend
# ---------------------------------------------------------------------------------------------

def _backend_api(backend: str) -> tuple[type, type]:
    """(COCO class, COCOeval class) of a backend."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster_coco_eval":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError as error:
            raise ImportError(
                "backend 'faster_coco_eval' needs the faster-coco-eval package: pip install faster-coco-eval"
            ) from error
        return COCO, COCOeval_faster
    raise ValueError(f"unknown COCO evaluation backend {backend!r}; choose one of {BACKENDS}")


def official_ground_truth(dataset: Mapping[str, Any]) -> dict:
    """The ground truth the official COCO tools score against: the annotation dict as ``pycocotools.coco.COCO(path)``
    loads it. Every image (also those without boxes, or whose file is missing: their objects are misses), every
    annotation with its ``bbox`` ``[x, y, w, h]`` as written (not clipped to its image), ``iscrowd`` and ``area``
    as in the file.

    Only what COCOeval cannot score at all is adapted (the dicts in ``dataset`` are not modified): an annotation
    without ``area`` gets ``w * h`` of its box (COCOeval needs one), and one whose ``bbox`` is not 4 finite
    numbers is left out (logged; ``tools/check_data.py`` names it).
    """
    kept, dropped = [], []
    for ann in dataset.get("annotations", []):
        bbox = ann.get("bbox") if isinstance(ann, Mapping) else None
        if (not isinstance(bbox, (list, tuple)) or len(bbox) != 4
                or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)):
            dropped.append(ann.get("id") if isinstance(ann, Mapping) else ann)
            continue
        kept.append(ann if "area" in ann else dict(ann, area=float(bbox[2]) * float(bbox[3])))
    if dropped:
        logger.warning("ground truth: %d annotations whose bbox is not 4 finite numbers cannot be scored and are left "
                       "out (ids %s); tools/check_data.py lists them", len(dropped), dropped[:10])
    official = dict(dataset)
    official["annotations"] = kept
    return official


def _coco_from_dataset(coco_cls: type, dataset: dict) -> Any:
    """Build a COCO index object of ``coco_cls`` around an in-memory dataset dict (quietly)."""
    coco = coco_cls()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco_gt(coco_gt: Any, backend: str = "pycocotools") -> Any:
    """Return a ground-truth COCO object of ``backend``'s own class.

    ``coco_gt`` may be a JSON path or a COCO-format dict (read as :func:`official_ground_truth` says), or a COCO
    object of either backend (used as it is; re-indexed around the same dataset dict when the class differs,
    the annotations are not copied).
    """
    coco_cls, _ = _backend_api(backend)
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
    return _coco_from_dataset(coco_cls, dataset)


def _load_results(results: list[dict] | PathLike) -> list[dict]:
    """Results list (or JSON path) -> fresh dicts, so COCO's in-place additions don't leak to the caller."""
    if isinstance(results, (str, os.PathLike)):
        with open(results) as handle:
            results = json.load(handle)
    if not isinstance(results, list):
        raise TypeError(f"results must be a list of COCO result dicts or a JSON path, not {type(results).__name__}")
    return [dict(r) for r in results]


def _results_coco(gt: Any, results: list[dict]) -> Any:
    """Detection COCO object for ``results``; an empty list gives an empty (but evaluable) index."""
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return gt.loadRes(results)
    dataset = {
        "images": list(gt.dataset.get("images", [])),
        "categories": list(gt.dataset.get("categories", [])),
        "annotations": [],
    }
    return _coco_from_dataset(type(gt), dataset)


def _class_name_by_category(gt: Any, class_names: Mapping[int, str] | Sequence[str] | None) -> dict[int, str]:
    """category id -> display name. A sequence is aligned with the sorted GT category ids."""
    category_ids = sorted(int(c) for c in gt.getCatIds())
    if class_names is None:
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in gt.loadCats(category_ids)}
    elif isinstance(class_names, Mapping):
        names = {int(k): str(v) for k, v in class_names.items()}
    else:
        if len(class_names) != len(category_ids):
            raise ValueError(
                f"class_names has {len(class_names)} names but the ground truth has {len(category_ids)} "
                "categories; pass a {category_id: name} mapping instead"
            )
        names = dict(zip(category_ids, map(str, class_names)))
    return {cid: names.get(cid, str(cid)) for cid in category_ids}


# ---------------------------------------------------------------------------------------------
# evaluation
# ---------------------------------------------------------------------------------------------

def _mean_defined(values: np.ndarray) -> float | None:
    """Mean of the entries COCOeval marks as defined (> -1); None when there are none."""
    defined = values[values > -1]
    return float(defined.mean()) if defined.size else None


def _per_class_ap(coco_eval: Any, names: dict[int, str]) -> dict[str, float | None]:
    """AP@[0.50:0.95], area 'all', last maxDets, per category; None for categories without GT."""
    precision = coco_eval.eval["precision"]  # [T iou, R recall, K class, A area, M maxDets]
    area_all = list(coco_eval.params.areaRngLbl).index("all")
    per_class: dict[str, float | None] = {}
    for k, category_id in enumerate(coco_eval.params.catIds):
        name = names[int(category_id)]
        if name in per_class:  # two categories share a name: keep both visible
            name = f"{name} (id {int(category_id)})"
        per_class[name] = _mean_defined(precision[:, :, k, area_all, -1])
    return per_class


def format_coco_summary(stats: Mapping[str, float]) -> str:
    """The standard 12-line COCOeval summary for ``stats`` (keys :data:`STAT_KEYS`)."""
    lines = []
    for key, (title, iou, area, max_dets) in zip(STAT_KEYS, _STAT_LAYOUT):
        lines.append(
            f" {title:<18} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] = {stats[key]:0.3f}"
        )
    return "\n".join(lines)


def evaluate_coco(
    coco_gt: Any,
    results: list[dict] | PathLike,
    *,
    image_ids: Sequence[int] | None = None,
    backend: str = "pycocotools",
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Run COCO box evaluation.

    Args:
        coco_gt: ground truth: a COCO object (pycocotools or faster_coco_eval), a COCO dict or a JSON path.
        results: COCO result dicts (``bbox`` xywh) or a JSON path to them. May be empty.
        image_ids: evaluate only these images (default: every GT image). Images without detections
            count as misses; results for other images are ignored.
        backend: ``"pycocotools"`` or ``"faster_coco_eval"`` (same numbers, faster).
        class_names: names for ``per_class``: ``{category_id: name}`` or a sequence aligned with the sorted
            GT category ids. Default: the GT categories' ``name``.
        verbose: print the standard 12-line COCO summary.

    Returns:
        ``{key: float for key in STAT_KEYS}`` (0..1; -1.0 where an area range has no GT) plus
        ``"per_class": {name: AP or None}`` (None = no GT for that class).
    """
    gt = load_coco_gt(coco_gt, backend)
    _, eval_cls = _backend_api(backend)
    detections = _load_results(results)

    gt_image_ids = {int(i) for i in gt.getImgIds()}
    unknown = sorted({int(r["image_id"]) for r in detections} - gt_image_ids)
    if unknown:
        raise ValueError(
            f"{len(unknown)} result image ids are not in the ground truth (first: {unknown[:5]})"
        )
    if image_ids is not None:
        image_ids = sorted({int(i) for i in image_ids})
        missing = [i for i in image_ids if i not in gt_image_ids]
        if missing:
            raise ValueError(f"{len(missing)} image_ids are not in the ground truth (first: {missing[:5]})")

    dt = _results_coco(gt, detections)
    if backend == "faster_coco_eval":
        coco_eval = eval_cls(gt, dt, iouType="bbox", print_function=lambda *args, **kwargs: None)
    else:
        coco_eval = eval_cls(gt, dt, iouType="bbox")
    if image_ids is not None:
        coco_eval.params.imgIds = image_ids
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()

    metrics: dict[str, Any] = {key: float(value) for key, value in zip(STAT_KEYS, coco_eval.stats[: len(STAT_KEYS)])}
    metrics["per_class"] = _per_class_ap(coco_eval, _class_name_by_category(gt, class_names))
    if verbose:
        print(format_coco_summary(metrics))
    return metrics


# ---------------------------------------------------------------------------------------------
# human-readable tables
# ---------------------------------------------------------------------------------------------

def format_stats_table(stats: Mapping[str, Any]) -> str:
    """Aligned ``key  value  meaning`` table of the 12 stats (values shown as 0..1 with 4 decimals)."""
    rows = []
    for key, (title, iou, area, max_dets) in zip(STAT_KEYS, _STAT_LAYOUT):
        value = stats.get(key)
        shown = "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
        kind = "AP" if title.startswith("Average Precision") else "AR"
        rows.append((key, shown, f"{kind} IoU={iou} area={area} maxDets={max_dets}"))
    key_width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    return "\n".join(f"{k:<{key_width}}  {v:>{value_width}}  {d}" for k, v, d in rows)


def format_per_class_table(per_class: Mapping[str, float | None], sort_by: str = "name") -> str:
    """Aligned ``class  AP`` table; ``sort_by`` is ``"name"`` or ``"ap"`` (best first, undefined last)."""
    if sort_by not in ("name", "ap"):
        raise ValueError(f"sort_by must be 'name' or 'ap', not {sort_by!r}")

    def defined(ap: float | None) -> bool:
        return ap is not None and not math.isnan(ap) and ap >= 0

    items = list(per_class.items())
    if sort_by == "name":
        items.sort(key=lambda item: item[0])
    else:
        items.sort(key=lambda item: (not defined(item[1]), -(item[1] if defined(item[1]) else 0.0), item[0]))
    header = ("class", "AP")
    rows = [(name, f"{ap:.4f}" if defined(ap) else "-") for name, ap in items]
    name_width = max([len(header[0])] + [len(r[0]) for r in rows])
    value_width = max([len(header[1])] + [len(r[1]) for r in rows])
    lines = [f"{header[0]:<{name_width}}  {header[1]:>{value_width}}", "-" * (name_width + 2 + value_width)]
    lines += [f"{name:<{name_width}}  {value:>{value_width}}" for name, value in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------

def _json_safe(value: Any) -> Any:
    """numpy/torch scalars -> python; NaN/inf -> None; recurses through dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
        return _json_safe(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_metrics(path: PathLike, stats: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
    """Write ``metrics.json``: the stats (and ``per_class``) plus optional ``extra`` keys, atomically.

    NaN becomes ``null``; -1.0 stats (no GT in that area range) are kept as -1.0.
    """
    payload = dict(stats)
    if extra:
        payload.update(extra)
    write_json_atomic(path, _json_safe(payload))


# ---------------------------------------------------------------------------------------------
# distributed accumulation
# ---------------------------------------------------------------------------------------------

def _distributed_world_size(group: Any = None) -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(group)
    return 1


class CocoEvaluator:
    """Accumulates detections over a (possibly distributed) validation pass and computes COCO metrics.

    Each rank calls :meth:`update` with its own images; :meth:`compute` gathers every rank's results
    (``all_gather_object``), keeps one entry per image id (a ``DistributedSampler`` repeats images to
    pad the last batch), evaluates on rank 0 over ALL GT images and broadcasts, so every rank returns
    identical numbers. Call it on every rank (it is a collective when world size > 1).
    """

    def __init__(
        self,
        coco_gt: Any,
        category_ids: Sequence[int],
        class_names: Sequence[str] | None = None,
        backend: str = "pycocotools",
        *,
        verbose: bool = False,
        process_group: Any = None,
    ) -> None:
        """
        Args:
            coco_gt: ground truth (COCO object, COCO dict or JSON path); indexed once here.
            category_ids: dataset category id of each contiguous label ``0..C-1``.
            class_names: name of each contiguous label (default: the GT category names).
            backend: ``"pycocotools"`` or ``"faster_coco_eval"``.
            verbose: print the 12-line summary (rank 0 only) on every :meth:`compute`.
            process_group: torch.distributed group to gather over (default: the world).
        """
        self.gt = load_coco_gt(coco_gt, backend)
        self.category_ids = [int(c) for c in category_ids]
        if class_names is not None and len(class_names) != len(self.category_ids):
            raise ValueError(f"{len(class_names)} class names for {len(self.category_ids)} category ids")
        self.class_names = (
            None if class_names is None else dict(zip(self.category_ids, map(str, class_names)))
        )
        self.backend = backend
        self.verbose = verbose
        self.process_group = process_group
        self._results_by_image: dict[int, list[dict]] = {}

    def reset(self) -> None:
        """Forget all stored detections (call at the start of each validation pass)."""
        self._results_by_image = {}

    @property
    def num_images(self) -> int:
        """Number of distinct images stored on this rank."""
        return len(self._results_by_image)

    def update(self, image_ids: Sequence[int], detections: Sequence[Detections]) -> None:
        """Store COCO results (on the host) for a batch. ``detections`` as in :func:`detections_to_coco_results`.

        An image seen twice keeps its latest detections; an image with no detections is still
        recorded as seen.
        """
        image_ids = [int(i) for i in image_ids]
        if len(image_ids) != len(detections):
            raise ValueError(f"got {len(image_ids)} image ids for {len(detections)} detection dicts")
        for image_id, det in zip(image_ids, detections):
            self._results_by_image[image_id] = detections_to_coco_results([image_id], [det], self.category_ids)

    def results(self, merged: dict[int, list[dict]] | None = None) -> list[dict]:
        """The stored COCO result dicts (this rank's, or ``merged``), ordered by image id."""
        merged = self._results_by_image if merged is None else merged
        return [r for image_id in sorted(merged) for r in merged[image_id]]

    def _gather(self) -> dict[int, list[dict]]:
        """Union of every rank's per-image results; the lowest rank wins for a repeated image id."""
        world_size = _distributed_world_size(self.process_group)
        if world_size == 1:
            return dict(self._results_by_image)
        gathered: list[Any] = [None] * world_size
        torch.distributed.all_gather_object(gathered, self._results_by_image, group=self.process_group)
        merged: dict[int, list[dict]] = {}
        for rank_results in gathered:
            for image_id, results in rank_results.items():
                merged.setdefault(image_id, results)
        return merged

    def _evaluate(self, merged: dict[int, list[dict]], print_summary: bool) -> dict[str, Any]:
        unseen = len(set(int(i) for i in self.gt.getImgIds()) - merged.keys())
        if unseen:
            logger.warning(
                "%d of %d ground-truth images received no predictions on any rank; they count as misses",
                unseen, len(self.gt.getImgIds()),
            )
        results = self.results(merged)
        return evaluate_coco(
            self.gt, results, backend=self.backend, class_names=self.class_names, verbose=print_summary
        )

    def compute(self) -> dict[str, Any]:
        """Metrics as :func:`evaluate_coco` returns them, identical on every rank."""
        merged = self._gather()
        world_size = _distributed_world_size(self.process_group)
        if world_size == 1:
            return self._evaluate(merged, self.verbose)

        rank = torch.distributed.get_rank(self.process_group)
        src = torch.distributed.get_global_rank(self.process_group, 0) if self.process_group is not None else 0
        payload: list[Any] = [None]
        if rank == 0:
            try:
                payload[0] = ("ok", self._evaluate(merged, self.verbose))
            except Exception as error:  # other ranks must not hang waiting for the broadcast
                payload[0] = ("error", f"{type(error).__name__}: {error}")
                torch.distributed.broadcast_object_list(payload, src=src, group=self.process_group)
                raise
        torch.distributed.broadcast_object_list(payload, src=src, group=self.process_group)
        status, value = payload[0]
        if status != "ok":
            raise RuntimeError(f"COCO evaluation failed on rank 0: {value}")
        return value


# ---------------------------------------------------------------------------------------------
# running a Predictor over a dataset
# ---------------------------------------------------------------------------------------------

def _loader(dataset: Any, batch_size: int, workers: int, collate: Any) -> Any:
    from torch.utils.data import DataLoader

    from .data.collate import worker_init_fn

    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                      worker_init_fn=worker_init_fn, pin_memory=torch.cuda.is_available())


def _progress(iterable: Any, total: int, enabled: bool) -> Any:
    if not enabled:
        return iterable
    import sys

    from tqdm import tqdm

    return tqdm(iterable, total=total, unit="batch", desc="eval", dynamic_ncols=True, file=sys.stderr)


def category_warnings(predictor: Any, dataset: Any) -> list[str]:
    """What differs between the model's classes and a dataset's categories (ids it cannot predict, renamed
    categories), as messages; empty when they agree."""
    model_ids = dict(zip(predictor.category_ids, predictor.class_names))
    warnings = []
    not_predicted = [c for c in dataset.category_ids if c not in model_ids]
    if not_predicted:
        warnings.append(f"the model does not predict categories {not_predicted} of the annotations "
                        f"(model category ids {predictor.category_ids}); they score AP 0")
    renamed = [(c, model_ids[c], n) for c, n in zip(dataset.category_ids, dataset.class_names)
               if c in model_ids and model_ids[c] != n]
    if renamed:
        warnings.append(f"category names differ between model and annotations (id, model, annotations): "
                        f"{renamed[:5]}")
    return warnings


def evaluate(predictor: Any, dataset: Any, *, batch_size: int = 8, workers: int = 0,
             backend: str = "pycocotools", progress: bool = False) -> dict[str, Any]:
    """COCO metrics of ``predictor`` (an :class:`effdet.Predictor`) on ``dataset`` (an
    :class:`effdet.data.CocoDetection` with ``eval_transforms``), made as validation makes them: batches
    through ``predictor.detect`` into a :class:`CocoEvaluator` (one entry per image id), scored against
    ``dataset.ground_truth`` (the file as the official COCO tools load it, :func:`official_ground_truth`).

    Returns the metrics of :func:`evaluate_coco` plus ``results`` (COCO result dicts ordered by image id)
    and ``seconds`` (detection time).
    """
    from .data.collate import collate_detection

    evaluator = CocoEvaluator(dataset.ground_truth, predictor.category_ids, predictor.class_names, backend)
    loader = _loader(dataset, batch_size, workers, collate_detection)
    start = time.perf_counter()
    for batch in _progress(loader, len(loader), progress):
        detections = predictor.detect(batch["images"], batch["scales"], batch["orig_sizes"])
        evaluator.update(batch["image_ids"].tolist(), detections)
    seconds = time.perf_counter() - start
    metrics = evaluator.compute()
    metrics["results"] = evaluator.results()
    metrics["seconds"] = seconds
    return metrics


def detect(predictor: Any, dataset: Any, *, batch_size: int = 8, workers: int = 0, progress: bool = False,
           root: PathLike | None = None) -> dict[str, Any]:
    """Test-dev style: detections of ``predictor`` on an :class:`effdet.data.sources.ImageFileDataset` without
    ground truth. Returns ``results`` (COCO result dicts), ``images`` (``{"id", "file_name", "width", "height"}``
    of each image read; file names relative to ``root`` when given), ``skipped`` (``{"file_name", "reason"}``
    of unreadable files) and ``failed`` (``[(path, reason)]``)."""
    from .data.sources import collate_image_files

    loader = _loader(dataset, batch_size, workers, collate_image_files)
    results: list[dict] = []
    images: list[dict] = []
    failed: list[tuple[str, str]] = []
    for collated in _progress(loader, len(loader), progress):
        failed.extend(collated["failed"])
        batch = collated["batch"]
        if batch is None:
            continue
        detections = predictor.detect(batch["images"], batch["scales"], batch["orig_sizes"])
        image_ids = batch["image_ids"].tolist()
        results.extend(detections_to_coco_results(image_ids, detections, predictor.category_ids))
        for image_id, path, (height, width) in zip(image_ids, collated["paths"], batch["orig_sizes"].tolist()):
            images.append({"id": image_id, "file_name": _relative(path, root), "width": width, "height": height})
    skipped = [{"file_name": _relative(path, root), "reason": reason} for path, reason in failed]
    return {"results": results, "images": images, "skipped": skipped, "failed": failed}


def _relative(path: str, root: PathLike | None) -> str:
    return os.path.relpath(path, root) if root is not None else str(path)
