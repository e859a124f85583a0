"""Where a detector goes wrong: PR curves, per-class AP, a confusion matrix, a TIDE-style error breakdown and a
gallery of the images with the most errors.

Everything starts from one COCOeval run with the standard parameters (:func:`effdet.evaluation.cocoeval.evaluate_results`,
pycocotools): PR curves and per-class AP are read from ``eval['precision']`` (``[T iou, R recall, K class, A area,
M maxDets]``), and which detection matched which ground truth at IoU 0.5 from ``evalImgs`` (``dtMatches`` /
``gtMatches``). IoU between a detection and ground truth of *other* classes (which COCOeval never computes) comes
from ``pycocotools.mask.iou``, the function COCOeval uses.

Modules: :mod:`.errors` (the TIDE breakdown: the error types and the AP lost to each), :mod:`.confusion` (class
confusion at one operating point), :mod:`.figures` (plots and the gallery); :func:`analyze` writes them all.

Boxes: COCO results ``bbox`` ``[x, y, w, h]`` in original-image pixels; drawings use ``xyxy``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

from ..cocoeval import PathLike, evaluate_results, iou_index, mean_defined, precision_all_areas

from .confusion import confusion_matrix
from .errors import ERROR_NAMES, ERROR_TYPES, error_breakdown, format_error_table  # noqa: F401 (ERROR_NAMES: API)

__all__ = [
    "ERROR_TYPES",
    "analyze",
    "confusion_matrix",
    "error_breakdown",
    "format_error_table",
    "run_cocoeval",
]


def run_cocoeval(coco_gt: Any, results: Union[Sequence[dict], PathLike], iou_thresholds: Optional[Sequence[float]] = None,
                 all_areas_only: bool = False) -> Any:
    """pycocotools ``COCOeval`` (bbox) after ``evaluate()`` and ``accumulate()``, quietly: the ``evaluator`` of
    :func:`effdet.evaluation.cocoeval.evaluate_results`.

    ``iou_thresholds``: default COCO's 0.50:0.05:0.95; ``all_areas_only``: one area range ('all').
    """
    return evaluate_results(coco_gt, results, iou_thresholds=iou_thresholds, all_areas_only=all_areas_only).evaluator


def per_class_ap(evaluator: Any, names: dict[int, str]) -> dict[str, dict[str, Optional[float]]]:
    """``{name: {"AP": AP@[.5:.95], "AP50": AP@.5}}`` from ``eval['precision']`` (None: no GT)."""
    precision = precision_all_areas(evaluator)  # [T, R, K]
    t50 = iou_index(evaluator, 0.5)
    return {names[c]: {"AP": mean_defined(precision[:, :, k]), "AP50": mean_defined(precision[t50, :, k])}
            for k, c in enumerate(evaluator.params.catIds)}


def analyze(coco_gt: Any, results: Union[Sequence[dict], PathLike], out_dir: PathLike, *,
            images_dir: Optional[PathLike] = None, class_names: Optional[Mapping[int, str]] = None,
            score_threshold: float = 0.5, iou_threshold: float = 0.5, gallery: int = 8,
            exif_orientation: str = "apply", allow_outside_images: bool = False,
            max_dets: int = 100) -> dict[str, Any]:
    """Write the error analysis next to ``metrics.json`` in ``out_dir`` (scored with ``max(100, max_dets)``
    detections per image, as the metrics: pass ``eval.max_detections``):

    ``pr_curves.png``, ``per_class_ap.png``, ``confusion_matrix.png`` + ``.json``, ``errors.png`` +
    ``errors.json`` (TIDE table; ``errors.txt`` the same as text) and, with ``images_dir``,
    ``gallery/NN_<image>.jpg`` for the ``gallery`` images with the most errors (read with ``exif_orientation``,
    as the boxes were scored; a ``file_name`` leaving ``images_dir`` is skipped unless ``allow_outside_images``).
    Returns ``{"files": [...], "errors": breakdown without the per-error list, "confusion": ...}``.
    """
    from ...fileio import write_json_atomic

    from .figures import plot_confusion_matrix, plot_errors, plot_per_class_ap, plot_pr_curves, write_gallery

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = evaluate_results(coco_gt, results, class_names=class_names, max_dets=max_dets)
    gt, results, names, evaluator = run.gt, run.results, run.names, run.evaluator
    breakdown = error_breakdown(gt, results, evaluator)
    confusion = confusion_matrix(gt, results, score_threshold, iou_threshold, class_names)
    table = per_class_ap(evaluator, names)
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
