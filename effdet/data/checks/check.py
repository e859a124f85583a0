"""The whole check of a dataset (:func:`check_dataset`) and the fast part training runs first (:func:`preflight`)."""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

from .boxes import check_annotations
from .entries import check_sections, first_entry_per_id, load_annotations, well_formed_entries
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
    data: Optional[Dict[str, Any]] = None,
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
    from effdet.imageinfo import check_exif_orientation_mode

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
    check_annotations(report, anns, category_names, image_by_id, sizes)
    statistics(report, data, anns, category_names, image_by_id)
    return report


def preflight(images_dir: PathLike, annotations: PathLike, *, data: Optional[Dict[str, Any]] = None,
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
