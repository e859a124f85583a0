"""The whole check of a dataset (:func:`check_dataset`, with the per-annotation checks) and the fast part training
runs first (:func:`preflight`)."""
from __future__ import annotations

import logging
from typing import Any, Optional

from .boxes import BOX_SEVERITY, box_verdict, file_written_as_xyxy, looks_normalized
from .entries import check_sections, first_entry_per_id, load_annotations, unknown_category, well_formed_entries
from .findings import DataCheckError, DataReport
from .images import check_images
from .paths import PathLike
from .statistics import statistics

logger = logging.getLogger("effdet.data.checks")

LEVELS = ("fast", "headers", "full")


def check_dataset(
    images_dir: PathLike,
    annotations: PathLike,
    *,
    level: str = "full",
    data: Optional[dict[str, Any]] = None,
    allow_outside_images: bool = False,
    max_image_pixels: Optional[int] = None,
    exif_orientation: str = "apply",
) -> DataReport:
    """Check a COCO-format dataset; return every finding (see :mod:`effdet.data.checks` for levels/severities).

    Args:
        images_dir: the folder ``file_name`` entries are relative to.
        annotations: the COCO JSON (also used to name the file in findings when ``data`` is given).
        level: ``"fast"`` | ``"headers"`` | ``"full"``.
        data: an already-loaded COCO dict (e.g. converted from VOC/YOLO) instead of reading ``annotations``.
        allow_outside_images: accept absolute ``file_name`` values and ``..`` leaving ``images_dir``.
        max_image_pixels: pixel limit for ``image_too_large`` (default: ``effdet.imageinfo.max_image_pixels()``).
        exif_orientation: ``"apply"`` (images as displayed: the JSON's width/height are compared with the
            displayed size) or ``"ignore"`` (the stored pixels), as training loads them.
    """
    from ...imageinfo import check_exif_orientation_mode

    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    check_exif_orientation_mode(exif_orientation)
    report = DataReport(str(annotations), str(images_dir), level)
    if data is None:
        data = load_annotations(annotations, report)
        if data is None:
            return report
    elif not check_sections(report, data, str(annotations)):
        return report

    categories = well_formed_entries(report, data, "categories")
    images = well_formed_entries(report, data, "images")
    anns = well_formed_entries(report, data, "annotations")
    category_names = first_entry_per_id(report, categories, "category")
    image_by_id = first_entry_per_id(report, images, "image")
    first_entry_per_id(report, anns, "annotation")
    if not data["images"]:
        report.add("fatal", "no_images", "the file lists no images", file=str(annotations))

    sizes = check_images(report, images_dir, image_by_id, level, allow_outside_images, max_image_pixels,
                         exif_orientation)
    _check_annotations(report, anns, category_names, image_by_id, sizes)
    stats, empty_images = statistics(data, anns, category_names, image_by_id)
    for image_id in empty_images:
        report.add("warning", "empty_image", "no boxes (a negative example; fine if intended)",
                   image_id=image_id, file=image_by_id[image_id]["file_name"])
    for row in stats["class_balance"]:
        if row["boxes"] == 0:
            report.add("warning", "unused_category", f"category '{row['name']}' (id {row['id']}) has no boxes: "
                       "the model will never learn it")
    report.stats.update(stats)
    return report


def _check_annotations(report: DataReport, anns: list[dict[str, Any]], category_names: dict[Any, str],
                       image_by_id: dict[Any, dict[str, Any]], sizes: dict[Any, tuple[float, float]]) -> None:
    """Per annotation: a known category, a known image, a box (:func:`box_verdict`), crowd regions; for the
    whole file: normalised coordinates or boxes written as xyxy."""
    normalized = looks_normalized(anns, sizes)
    if normalized:
        report.add("error", "boxes_normalized", f"all {len(anns)} boxes have coordinates in 0..1 while the images "
                   "are larger: the boxes are normalised (e.g. YOLO-style), COCO needs pixels")
    sized = []  # (bbox, image width, image height) for the whole-file xyxy verdict
    for ann in anns:
        ann_id, image_id = ann["id"], ann["image_id"]
        file = image_by_id[image_id]["file_name"] if image_id in image_by_id else None
        unknown = unknown_category(ann, category_names)
        if unknown:
            report.add("fatal", "unknown_category", unknown, annotation_id=ann_id, image_id=image_id, file=file)
        if image_id not in image_by_id:
            report.add("error", "orphan_annotation", f"image_id {image_id!r} is not in 'images'",
                       annotation_id=ann_id, image_id=image_id)
            continue
        if image_id not in sizes:
            continue
        width, height = sizes[image_id]
        code, _, message = box_verdict(ann["bbox"], width, height, normalized)
        sized.append((ann["bbox"], width, height))
        if code is not None:
            report.add(BOX_SEVERITY[code], code, message, annotation_id=ann_id, image_id=image_id, file=file)
        if ann.get("iscrowd"):
            report.add("warning", "crowd_region", "iscrowd=1: an ignore region, not an object",
                       annotation_id=ann_id, image_id=image_id, file=file)
    xyxy_file, fit_xyxy = file_written_as_xyxy(sized) if not normalized else (False, 0)
    if xyxy_file:
        report.add("error", "box_format_suspect", f"{fit_xyxy} of {len(sized)} boxes overflow their image as "
                   f"[x, y, w, h] but fit as [x1, y1, x2, y2]: the file looks written in xyxy; COCO bbox is "
                   f"[x, y, width, height]. --fix converts every box of the file, also those that fit as "
                   f"[x, y, w, h]")


def preflight(images_dir: PathLike, annotations: PathLike, *, data: Optional[dict[str, Any]] = None,
              allow_outside_images: bool = False, split: str = "", exif_orientation: str = "apply") -> DataReport:
    """The fast checks (JSON and directory listings only) that training runs before it builds anything.

    Fatal findings raise :class:`DataCheckError` listing all of them at once (not only the first);
    errors and warnings are logged as one summary line each, pointing to ``tools/check_data.py``.
    """
    report = check_dataset(images_dir, annotations, level="fast", data=data,
                           allow_outside_images=allow_outside_images, exif_orientation=exif_orientation)
    label = f"{split} data" if split else "data"
    fatal = report.of("fatal")
    if fatal:
        shown = "\n  ".join(f.line() for f in fatal[:20])
        more = f"\n  ... and {len(fatal) - 20} more" if len(fatal) > 20 else ""
        raise DataCheckError(
            f"the {label} in '{annotations}' cannot train ({len(fatal)} fatal problems):\n  {shown}{more}\n"
            f"Run `python tools/check_data.py --images {images_dir} --annotations {annotations}` for the whole "
            f"report, and `--fix OUT.json` for a cleaned copy.", report)
    for severity in ("error", "warning"):
        counts = report.codes(severity)
        if counts and severity == "error":
            examples = "; ".join(f.line() for f in report.of("error")[:3])
            logger.warning("%s '%s': %s (%s). Training skips or repairs these; see tools/check_data.py. E.g. %s",
                           label, annotations, ", ".join(f"{n} {c}" for c, n in counts.items()),
                           severity + "s", examples)
        elif counts:
            logger.info("%s '%s': %s", label, annotations, ", ".join(f"{n} {c}" for c, n in counts.items()))
    return report
