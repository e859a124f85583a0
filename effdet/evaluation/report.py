"""COCO box evaluation: detections -> COCO results -> the 12 COCO stats plus per-class AP.

Conventions (docs/architecture.md):

* Detections enter as one dict per image with ``boxes`` ``[K, 4]`` absolute ``xyxy`` pixels in the
  ORIGINAL image, ``scores`` ``[K]`` and ``labels`` ``[K]`` contiguous ``0..C-1``. They leave as COCO
  result dicts (``image_id``, ``category_id`` = the dataset's own id, ``bbox`` ``xywh``, ``score``).
* Metrics are plain floats in ``0..1`` under :data:`STAT_KEYS`, plus ``per_class`` mapping class name
  to AP@[0.50:0.95] (all areas), and ``max_dets``: the largest maxDets, COCO's 100 or the model's
  ``eval.max_detections`` when larger (:func:`~effdet.evaluation.cocoeval.coco_max_dets`); AP, per-class AP and
  "AR100" are scored with it, so dense images are not cut at 100 detections.
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

COCOeval runs in one place, :func:`effdet.evaluation.cocoeval.evaluate_results`; the COCO evaluator (``coco_eval``, config
``eval.coco_eval``) is ``pycocotools`` (reference) or ``faster_coco_eval`` (the same numbers, C++ evaluate/accumulate,
roughly 10x faster; ``pip install faster-coco-eval``). Tables and ``metrics.json``: :mod:`effdet.evaluation.metrics`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np
import torch

from ..ops.boxes import xyxy_to_xywh
from ..choices import COCO_EVALUATORS
from .cocoeval import (COCO_MAX_DETS, coco_eval_argument, coco_max_dets, evaluate_results,  # noqa: F401 (API)
                       load_coco_gt, mean_defined, official_ground_truth, precision_all_areas)
from ..fileio import write_json_atomic  # noqa: F401  (part of this module's API)
from .metrics import (STAT_KEYS, format_coco_summary, format_per_class_table, format_stats_table,  # noqa: F401
                      save_metrics)
from ..types import Detections, PathLike

logger = logging.getLogger(__name__)

BACKENDS = COCO_EVALUATORS  # the name this module has always exported (deprecated: COCO_EVALUATORS)


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
# evaluation
# ---------------------------------------------------------------------------------------------

def _per_class_ap(coco_eval: Any, names: dict[int, str]) -> dict[str, float | None]:
    """AP@[0.50:0.95], area 'all', last maxDets, per category; None for categories without GT."""
    precision = precision_all_areas(coco_eval)  # [T iou, R recall, K class]
    per_class: dict[str, float | None] = {}
    for k, category_id in enumerate(coco_eval.params.catIds):
        name = names[int(category_id)]
        if name in per_class:  # two categories share a name: keep both visible
            name = f"{name} (id {int(category_id)})"
        per_class[name] = mean_defined(precision[:, :, k])
    return per_class


def evaluate_coco(
    coco_gt: Any,
    results: list[dict] | PathLike,
    *,
    image_ids: Sequence[int] | None = None,
    coco_eval: str = "pycocotools",
    class_names: Mapping[int, str] | Sequence[str] | None = None,
    verbose: bool = True,
    backend: Optional[str] = None,
    max_dets: int = COCO_MAX_DETS,
) -> dict[str, Any]:
    """Run COCO box evaluation.

    Args:
        coco_gt: ground truth: a COCO object (pycocotools or faster_coco_eval), a COCO dict or a JSON path.
        results: COCO result dicts (``bbox`` xywh) or a JSON path to them. May be empty.
        image_ids: evaluate only these images (default: every GT image). Images without detections
            count as misses; results for other images are ignored.
        coco_eval: ``"pycocotools"`` or ``"faster_coco_eval"`` (same numbers, faster).
        class_names: names for ``per_class``: ``{category_id: name}`` or a sequence aligned with the sorted
            GT category ids. Default: the GT categories' ``name``.
        verbose: print the standard 12-line COCO summary.
        backend: the deprecated name of ``coco_eval`` (one release, with a FutureWarning).
        max_dets: detections per image scored (the largest maxDets): ``max(100, max_dets)``; pass the model's
            ``max_detections``.

    Returns:
        ``{key: float for key in STAT_KEYS}`` (0..1; -1.0 where an area range has no GT), ``"per_class": {name: AP
        or None}`` (None = no GT for that class) and ``"max_dets"`` (the largest maxDets used).
    """
    coco_eval = coco_eval_argument(coco_eval, backend, "evaluate_coco")
    run = evaluate_results(coco_gt, results, coco_eval=coco_eval, class_names=class_names, image_ids=image_ids,
                           summarize=True, max_dets=max_dets)
    stats = run.evaluator.stats[: len(STAT_KEYS)]
    metrics: dict[str, Any] = {key: float(value) for key, value in zip(STAT_KEYS, stats)}
    metrics["per_class"] = _per_class_ap(run.evaluator, run.names)
    metrics["max_dets"] = int(run.evaluator.params.maxDets[-1])
    if verbose:
        print(format_coco_summary(metrics))
    return metrics


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
        coco_eval: str = "pycocotools",
        *,
        verbose: bool = False,
        process_group: Any = None,
        backend: Optional[str] = None,
        max_dets: int = COCO_MAX_DETS,
    ) -> None:
        """
        Args:
            coco_gt: ground truth (COCO object, COCO dict or JSON path); indexed once here.
            category_ids: dataset category id of each contiguous label ``0..C-1``.
            class_names: name of each contiguous label (default: the GT category names).
            coco_eval: ``"pycocotools"`` or ``"faster_coco_eval"``.
            verbose: print the 12-line summary (rank 0 only) on every :meth:`compute`.
            process_group: torch.distributed group to gather over (default: the world).
            backend: the deprecated name of ``coco_eval`` (one release, with a FutureWarning).
            max_dets: detections per image scored, ``max(100, max_dets)`` (pass ``eval.max_detections``).
        """
        coco_eval = coco_eval_argument(coco_eval, backend, "CocoEvaluator")
        self.max_dets = coco_max_dets(max_dets)
        self.gt = load_coco_gt(coco_gt, coco_eval)
        self.category_ids = [int(c) for c in category_ids]
        if class_names is not None and len(class_names) != len(self.category_ids):
            raise ValueError(f"{len(class_names)} class names for {len(self.category_ids)} category ids")
        self.class_names = (
            None if class_names is None else dict(zip(self.category_ids, map(str, class_names)))
        )
        self.coco_eval = coco_eval
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
            self.gt, results, coco_eval=self.coco_eval, class_names=self.class_names, verbose=print_summary,
            max_dets=self.max_dets,
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

    from ..data.collate import worker_init_fn

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


def _slices(predictor: Any) -> bool:
    """Whether ``predictor`` detects large images slice by slice (``settings.slice_size`` set)."""
    return getattr(predictor.settings, "slice_size", None) is not None


def _source_images(dataset: Any) -> Any:
    """A shallow copy of ``dataset`` that yields the images as read (``H x W x 3`` RGB numpy, source pixels) instead
    of letterboxed tensors: what sliced inference needs."""
    import copy

    source = copy.copy(dataset)
    if hasattr(source, "transform"):  # CocoDetection
        source.transform = None
    if hasattr(source, "source_images"):  # ImageFileDataset
        source.source_images = True
    return source


def _batches(predictor: Any, dataset: Any, batch_size: int, workers: int, collate: Any, progress: bool) -> Any:
    """``(batch, detections)`` over ``dataset``: letterboxed batches through ``predictor.detect`` (the validation
    step), or, when the predictor slices, the images as read through ``predictor.predict_rgb`` (each image larger
    than ``slice_size`` slice by slice, the others letterboxed as above)."""
    from ..data.collate import collate_source_images

    sliced = _slices(predictor)
    if sliced:
        dataset = _source_images(dataset)
        collate = _source_collate(collate, collate_source_images)
    loader = _loader(dataset, batch_size, workers, collate)
    for collated in _progress(loader, len(loader), progress):
        batch = collated.get("batch", collated) if isinstance(collated, dict) else collated
        if batch is None:
            yield collated, None
        elif sliced:
            yield collated, predictor.predict_rgb(batch["images"])
        else:
            yield collated, predictor.detect(batch["images"], batch["scales"], batch["orig_sizes"])


def _source_collate(collate: Any, source_collate: Any) -> Any:
    from ..data.sources import collate_image_files

    if collate is collate_image_files:
        import functools

        return functools.partial(collate_image_files, collate=source_collate)
    return source_collate


def evaluate(predictor: Any, dataset: Any, *, batch_size: int = 8, workers: int = 0,
             coco_eval: str = "pycocotools", progress: bool = False, backend: Optional[str] = None) -> dict[str, Any]:
    """COCO metrics of ``predictor`` (an :class:`effdet.Predictor`) on ``dataset`` (an
    :class:`effdet.data.CocoDetection` with ``eval_transforms``), made as validation makes them: batches
    through ``predictor.detect`` into a :class:`CocoEvaluator` (one entry per image id), scored against
    ``dataset.ground_truth`` (the file as the official COCO tools load it, :func:`official_ground_truth`) with
    ``max(100, predictor.settings.max_detections)`` detections per image.

    When the predictor slices (``settings.slice_size``), the images are read as they are (not letterboxed) and go
    through ``predictor.predict_rgb``: larger ones slice by slice.

    Returns the metrics of :func:`evaluate_coco` plus ``results`` (COCO result dicts ordered by image id)
    and ``seconds`` (detection time).
    """
    from ..data.collate import collate_detection

    coco_eval = coco_eval_argument(coco_eval, backend, "evaluate")
    evaluator = CocoEvaluator(dataset.ground_truth, predictor.category_ids, predictor.class_names, coco_eval,
                              max_dets=predictor.settings.max_detections)
    start = time.perf_counter()
    for batch, detections in _batches(predictor, dataset, batch_size, workers, collate_detection, progress):
        evaluator.update(batch["image_ids"].tolist(), detections)
    seconds = time.perf_counter() - start
    metrics = evaluator.compute()
    metrics["results"] = evaluator.results()
    metrics["seconds"] = seconds
    return metrics


def detect(predictor: Any, dataset: Any, *, batch_size: int = 8, workers: int = 0, progress: bool = False,
           root: PathLike | None = None) -> dict[str, Any]:
    """Test-dev style: detections of ``predictor`` on an :class:`effdet.data.sources.ImageFileDataset` without
    ground truth (sliced as in :func:`evaluate` when the predictor slices). Returns ``results`` (COCO result
    dicts), ``images`` (``{"id", "file_name", "width", "height"}`` of each image read; file names relative to
    ``root`` when given), ``skipped`` (``{"file_name", "reason"}`` of unreadable files) and ``failed``
    (``[(path, reason)]``)."""
    from ..data.sources import collate_image_files

    results: list[dict] = []
    images: list[dict] = []
    failed: list[tuple[str, str]] = []
    for collated, detections in _batches(predictor, dataset, batch_size, workers, collate_image_files, progress):
        failed.extend(collated["failed"])
        batch = collated["batch"]
        if batch is None:
            continue
        image_ids = batch["image_ids"].tolist()
        results.extend(detections_to_coco_results(image_ids, detections, predictor.category_ids))
        for image_id, path, (height, width) in zip(image_ids, collated["paths"], batch["orig_sizes"].tolist()):
            images.append({"id": image_id, "file_name": _relative(path, root), "width": width, "height": height})
    skipped = [{"file_name": _relative(path, root), "reason": reason} for path, reason in failed]
    return {"results": results, "images": images, "skipped": skipped, "failed": failed}


def _relative(path: str, root: PathLike | None) -> str:
    return os.path.relpath(path, root) if root is not None else str(path)
