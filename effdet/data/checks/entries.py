"""Schema and ids: reading a COCO JSON, the required sections and keys, unique ids, known category ids and image
sizes. Each check adds ``fatal`` findings to a :class:`~effdet.data.checks.findings.DataReport`; the checker lists
them all, the dataset (:class:`effdet.data.CocoDetection`) raises on the first."""
from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Optional

from .boxes import finite_number
from .findings import DataReport
from ...types import PathLike


# The keys every entry of a section must have.
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}
_SECTION_OF_KIND = {"category": "categories", "image": "images", "annotation": "annotations"}


def image_size(entry: Mapping[str, Any]) -> Optional[tuple[float, float]]:
    """``(width, height)`` of an image entry in pixels, or None when either is not a finite number of at least
    1 px (the ``bad_image_size`` rule: the checker reports it, the dataset refuses the file)."""
    width, height = finite_number(entry.get("width")), finite_number(entry.get("height"))
    if width is None or height is None or width < 1 or height < 1:
        return None
    return width, height


def load_annotations(path: PathLike, report: Optional[DataReport] = None) -> Optional[dict[str, Any]]:
    """Read a COCO JSON; on failure add a ``fatal`` finding (``not_json`` / ``not_coco``) and return None."""
    report = report if report is not None else DataReport(str(path), "", "fast")
    name = str(path)
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        report.add("fatal", "not_json", "the file does not exist", file=name)
        return None
    except json.JSONDecodeError as error:
        report.add("fatal", "not_json", f"is not valid JSON (line {error.lineno}, column {error.colno}: "
                   f"{error.msg})", file=name)
        return None
    except UnicodeDecodeError as error:
        report.add("fatal", "not_json", f"is not UTF-8 text ({error})", file=name)
        return None
    except OSError as error:
        report.add("fatal", "not_json", f"cannot be read ({error})", file=name)
        return None
    return data if check_sections(report, data, name) else None


def check_sections(report: DataReport, data: Any, name: str) -> bool:
    """Whether ``data`` is an object with ``images``, ``annotations`` and ``categories`` lists (else one
    ``not_coco`` finding)."""
    if not isinstance(data, dict):
        report.add("fatal", "not_coco", f"top level must be a JSON object, got {type(data).__name__} (a COCO "
                   f"detection file is an object with 'images', 'annotations' and 'categories' lists)", file=name)
        return False
    problems = [key for key in REQUIRED_KEYS if not isinstance(data.get(key), list)]
    if not problems:
        return True
    key = problems[0]
    also = f" (also {problems[1:]})" if len(problems) > 1 else ""
    if key in data:
        message = f"'{key}' must be a list, got {type(data[key]).__name__}{also}"
    else:
        message = (f"has no '{key}' key{also}; keys found: {sorted(str(k) for k in data)[:10]}. A COCO detection "
                   f"file needs images, annotations and categories lists (tools/convert_dataset.py converts "
                   f"Pascal VOC and YOLO)")
    report.add("fatal", "not_coco", message, file=name)
    return False


def well_formed_entries(report: DataReport, data: Mapping[str, Any], section: str) -> list[dict[str, Any]]:
    """Entries of a section that are objects with the required keys (the rest: ``malformed_entry``)."""
    kept = []
    for index, entry in enumerate(data[section]):
        if not isinstance(entry, dict):
            report.add("fatal", "malformed_entry", f"{section}[{index}] is a {type(entry).__name__}, not an object")
            continue
        missing = [key for key in REQUIRED_KEYS[section] if key not in entry]
        if missing:
            ident = f" (id {entry['id']})" if "id" in entry else ""
            keys = ", ".join(f"'{key}'" for key in missing)
            report.add("fatal", "malformed_entry", f"{section}[{index}]{ident} has no {keys} key"
                       f"{'s' if len(missing) > 1 else ''}", **_where(section, entry))
            continue
        kept.append(entry)
    return kept


def first_entry_per_id(report: DataReport, entries: Iterable[dict[str, Any]], kind: str) -> dict[Any, Any]:
    """``id -> entry`` of the first entry per id (for categories: ``id -> name``); later repeats are
    ``duplicate_<kind>_id`` findings. ``kind``: ``"category"``, ``"image"`` or ``"annotation"``."""
    first: dict[Any, Any] = {}
    for entry in entries:
        ident = entry["id"]
        if ident in first:
            report.add("fatal", f"duplicate_{kind}_id", f"duplicate {kind} id {ident!r}: more than one entry of "
                       f"'{_SECTION_OF_KIND[kind]}' has it", **_where(_SECTION_OF_KIND[kind], entry))
            continue
        first[ident] = entry["name"] if kind == "category" else entry
    return first


def unknown_category(annotation: Mapping[str, Any], category_ids: Iterable[Any]) -> Optional[str]:
    """The ``unknown_category`` message when the annotation's ``category_id`` is not one of ``category_ids`` (the
    ids as written in 'categories'), else None."""
    known = category_ids if isinstance(category_ids, (set, dict)) else set(category_ids)
    if annotation["category_id"] in known:
        return None
    try:
        valid = sorted(known)
    except TypeError:  # ids of mixed types
        valid = sorted(known, key=str)
    shown = f"{valid[:20]}{' ...' if len(valid) > 20 else ''}"
    return (f"annotation id {annotation['id']} has category_id {annotation['category_id']!r}, which is not in "
            f"'categories' (valid ids: {shown})")


def _where(section: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The finding's location fields for an entry of ``section``."""
    if section == "annotations":
        return {"annotation_id": entry.get("id")}
    if section == "images":
        return {"image_id": entry.get("id"), "file": entry.get("file_name")}
    return {}
