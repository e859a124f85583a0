"""Data checks for COCO-format detection datasets: one report of everything wrong or unusual.

Every problem is a :class:`Finding` naming the file, image id or annotation id, with a severity:

* ``fatal``   training refuses the file as it is (not COCO, duplicate ids, unknown category ids, a
              ``file_name`` outside the images folder, ...);
* ``error``   training would run but silently lose or misread data (a missing or corrupt image, a
              negative/NaN/zero box, an annotation of an unknown image, a box written as xyxy, ...);
* ``warning`` unusual but trainable (crowd regions, images without boxes, EXIF-rotated images,
              boxes partly outside their image, categories without boxes);
* ``info``    statistics (class balance, box sizes).

:func:`check_dataset` runs the checks; ``level`` decides how much of each image is read:
``"fast"`` (the JSON and one directory listing per folder: what ``train.py`` runs before it builds
anything), ``"headers"`` (also each image's header: real size, EXIF orientation, pixel limit) or
``"full"`` (also decodes every image: truncated and corrupt files). The real size is the displayed one
(EXIF orientation applied; width and height swapped for orientations 5-8) unless ``exif_orientation="ignore"``
(config ``data.exif_orientation``), as training loads the images. :func:`fix_dataset` returns a
cleaned copy of the JSON and the list of changes; the input is never modified.

Boxes: COCO ``[x, y, w, h]`` in pixels. A box is *partly outside* when it crosses the image border by
more than :data:`BORDER_TOLERANCE` px (sub-pixel overshoot from rounding is normal and ignored).
"""
from __future__ import annotations

import copy
import json
import logging
import math
import os
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..types import PathLike

logger = logging.getLogger("effdet.data.checks")

__all__ = [
    "BORDER_TOLERANCE",
    "DataCheckError",
    "DataReport",
    "Finding",
    "PathOutsideImagesError",
    "SEVERITIES",
    "check_dataset",
    "fix_dataset",
    "load_annotations",
    "preflight",
    "resolve_image_path",
]

SEVERITIES = ("fatal", "error", "warning", "info")
BORDER_TOLERANCE = 1.0  # px a box may cross its image border without a finding
MIN_BOX_SIZE = 1.0  # px; the dataset drops boxes narrower or shorter than this after clipping
COCO_AREA_BUCKETS = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, math.inf))
SIZE_HISTOGRAM_EDGES = (0, 8, 16, 32, 64, 96, 128, 256, 512, math.inf)  # sqrt(area) px
LEVELS = ("fast", "headers", "full")

_REQUIRED = {
    "images": ("id", "file_name", "width", "height"),
    "annotations": ("id", "image_id", "category_id", "bbox"),
    "categories": ("id", "name"),
}

# What each code means and what --fix does about it (shown in the report legend and the docs).
DESCRIPTIONS: Dict[str, str] = {
    "not_json": "the annotation file is not readable JSON",
    "not_coco": "the JSON is not a COCO detection file (needs images, annotations, categories lists)",
    "malformed_entry": "an entry is not an object or lacks a required key (fix: dropped)",
    "duplicate_category_id": "two categories share an id (fix: the first is kept)",
    "duplicate_image_id": "two images share an id (fix: the first is kept)",
    "duplicate_annotation_id": "two annotations share an id (fix: renumbered)",
    "unknown_category": "annotation of a category id not in 'categories' (fix: dropped)",
    "bad_image_size": "image width/height missing, not a number or <= 0 (fix: the real size, if readable)",
    "path_outside": "file_name is absolute or leaves the images folder (fix: image dropped)",
    "no_images": "no image entries",
    "missing_file": "image file not found (fix: image and its annotations dropped)",
    "unreadable_image": "image file cannot be decoded: corrupt, truncated or not an image (fix: dropped)",
    "image_too_large": "image above the pixel limit (decompression-bomb guard) (fix: dropped)",
    "size_mismatch": "the real image size differs from the JSON (fix: the JSON takes the real size)",
    "orphan_annotation": "annotation of an image id not in 'images' (fix: dropped)",
    "box_invalid": "bbox is not 4 finite numbers (NaN, inf, text) (fix: dropped)",
    "box_nonpositive": "bbox width or height is zero or negative (fix: dropped)",
    "box_outside": "bbox lies entirely outside its image (fix: dropped)",
    "box_degenerate": "bbox under 1 px once clipped to its image: training drops it (fix: dropped)",
    "box_xyxy": "bbox overflows its image as [x,y,w,h] but fits as [x1,y1,x2,y2] (fix: converted)",
    "boxes_normalized": "all boxes lie in 0..1: normalised coordinates, not pixels (fix: scaled to pixels)",
    "box_format_suspect": "most overflowing boxes fit as [x1,y1,x2,y2]: the file is written in xyxy "
                          "(fix: every box of the file converted, also those that fit as [x,y,w,h])",
    "box_clipped": "bbox partly outside its image (training clips it) (fix: clipped)",
    "exif_rotated": "EXIF orientation tag: used as displayed (data.exif_orientation=apply, the default) or as "
                    "stored (ignore): boxes and width/height must be of the same view",
    "crowd_region": "iscrowd=1 region: ignored in training, not an object",
    "empty_image": "image without boxes: a negative example",
    "unused_category": "category without any box",
    "class_balance": "boxes per category",
    "box_sizes": "box sizes (COCO area buckets)",
}

_FILE_CODES = ("missing_file", "unreadable_image", "image_too_large", "path_outside")


class DataCheckError(ValueError):
    """The data cannot train as it is; ``report`` holds every finding."""

    def __init__(self, message: str, report: "DataReport"):
        super().__init__(message)
        self.report = report


class PathOutsideImagesError(ValueError):
    """An image ``file_name`` resolves outside the images folder (absolute, or with ``..``)."""


@dataclass
class Finding:
    """One problem or observation. ``file`` / ``image_id`` / ``annotation_id`` say where."""

    severity: str
    code: str
    message: str
    file: Optional[str] = None
    image_id: Any = None
    annotation_id: Any = None
    detail: Dict[str, Any] = field(default_factory=dict)

    def where(self) -> str:
        parts = []
        if self.annotation_id is not None:
            parts.append(f"annotation id {self.annotation_id}")
        if self.image_id is not None:
            parts.append(f"image id {self.image_id}")
        if self.file:
            parts.append(f"'{self.file}'")
        return ", ".join(parts)

    def line(self) -> str:
        where = self.where()
        return f"[{self.code}] {where + ': ' if where else ''}{self.message}"


@dataclass
class DataReport:
    """Everything found in one annotation file. ``stats``: counts, class balance, box-size histogram."""

    annotations: str
    images_dir: str
    level: str
    findings: List[Finding] = field(default_factory=list)
    stats: Dict[str, Any] = field(default_factory=dict)

    def add(self, severity: str, code: str, message: str, **where: Any) -> Finding:
        finding = Finding(severity, code, message, **where)
        self.findings.append(finding)
        return finding

    def of(self, *severities: str) -> List[Finding]:
        return [f for f in self.findings if f.severity in severities]

    def codes(self, *severities: str) -> Counter:
        return Counter(f.code for f in self.findings if not severities or f.severity in severities)

    @property
    def can_train(self) -> bool:
        """No fatal finding and no error: training will see exactly what the JSON says."""
        return not self.of("fatal", "error")

    @property
    def exit_code(self) -> int:
        """0: the data can train as it is; 1: errors or fatal problems (see :attr:`can_train`)."""
        return 0 if self.can_train else 1

    def to_dict(self) -> Dict[str, Any]:
        return {
            "annotations": self.annotations, "images_dir": self.images_dir, "level": self.level,
            "can_train": self.can_train, "counts": dict(self.codes()),
            "findings": [asdict(f) for f in self.findings], "stats": self.stats,
        }

    def format_text(self, max_per_code: int = 20) -> str:
        """The human report: problems by severity (at most ``max_per_code`` lines per code), class balance,
        box sizes, verdict."""
        lines = [f"check of '{self.annotations}' (images folder '{self.images_dir}', level {self.level})"]
        stats = self.stats
        if "images" in stats:
            lines.append(f"  {stats['images']} images, {stats['annotations']} annotations, "
                         f"{stats['categories']} categories")
        titles = {
            "fatal": "FATAL (training refuses the file as it is)",
            "error": "ERRORS (training would silently skip or misread these)",
            "warning": "WARNINGS (unusual, trainable)",
        }
        for severity in ("fatal", "error", "warning"):
            found = self.of(severity)
            if not found:
                continue
            lines.append("")
            lines.append(f"{titles[severity]}: {len(found)}")
            by_code: Dict[str, List[Finding]] = defaultdict(list)
            for finding in found:
                by_code[finding.code].append(finding)
            for code, items in by_code.items():
                lines.append(f"  {code} ({len(items)}): {DESCRIPTIONS.get(code, '')}")
                for finding in items[:max_per_code]:
                    lines.append(f"    {finding.line()}")
                if len(items) > max_per_code:
                    lines.append(f"    ... and {len(items) - max_per_code} more (--max-lines to see more)")
        balance = stats.get("class_balance")
        if balance:
            lines += ["", "class balance (boxes per category, crowd regions excluded):"]
            most = max(row["boxes"] for row in balance) or 1
            width = max(len(f"{row['name']} (id {row['id']})") for row in balance)
            for row in balance:
                label = f"{row['name']} (id {row['id']})"
                bar = "#" * int(round(30 * row["boxes"] / most))
                lines.append(f"  {label:<{width}}  {row['boxes']:>7}  {bar}")
        sizes = stats.get("box_sizes")
        if sizes and sizes["total"]:
            total = sizes["total"]
            buckets = ", ".join(f"{name} {sizes[name]} ({100 * sizes[name] / total:.0f}%)"
                                for name, _, _ in COCO_AREA_BUCKETS)
            lines += ["", f"box sizes (COCO buckets by area: small < 32², medium < 96², large): {buckets}"]
            most = max(count for _, count in sizes["histogram"]) or 1
            for label, count in sizes["histogram"]:
                lines.append(f"  sqrt(area) {label:>10} px  {count:>7}  {'#' * int(round(30 * count / most))}")
        lines.append("")
        fatal, errors, warnings = len(self.of("fatal")), len(self.of("error")), len(self.of("warning"))
        if self.can_train:
            lines.append(f"verdict: the data can train ({warnings} warnings).")
        else:
            lines.append(f"verdict: CANNOT train as it is: {fatal} fatal, {errors} errors, {warnings} warnings. "
                         f"--fix OUT.json writes a cleaned copy and lists every change.")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------- paths


def resolve_image_path(images_dir: PathLike, file_name: Any, allow_outside: bool = False,
                       folder: str = "images folder") -> Path:
    """``images_dir / file_name``, refusing names that leave the folder: the one rule by which a ``file_name``
    becomes a path (datasets, checks, importers, ``tools/eval.py --image-info``, the analysis gallery).

    Absolute names and names whose ``..`` parts resolve outside ``images_dir`` raise
    :class:`PathOutsideImagesError` unless ``allow_outside`` (config ``data.allow_outside_images``).
    Symbolic links inside the folder are followed as they are (only the name is judged). ``folder`` names
    the folder in the message (e.g. ``"labels folder"`` where label files are written).
    """
    name = str(file_name)
    root = Path(images_dir)
    candidate = Path(name)
    hint = "set data.allow_outside_images=true / --allow-outside-images to accept it" if folder == "images folder" \
        else "it is refused"
    if candidate.is_absolute() or candidate.drive:
        if allow_outside:
            return candidate
        raise PathOutsideImagesError(
            f"file_name '{name}' is an absolute path; file names must be relative to the {folder} "
            f"'{root}' ({hint})")
    joined = root / candidate
    if not allow_outside:
        base = os.path.normpath(os.path.abspath(root))
        target = os.path.normpath(os.path.abspath(joined))
        if os.path.commonpath([base, target]) != base:
            raise PathOutsideImagesError(
                f"file_name '{name}' leaves the {folder} '{root}' (it resolves to '{target}'); {hint}")
    return joined


# ---------------------------------------------------------------------------------------------- JSON


def load_annotations(path: PathLike, report: Optional[DataReport] = None) -> Optional[Dict[str, Any]]:
    """Read a COCO JSON; on failure add a ``fatal`` finding (``not_json`` / ``not_coco``) and return None."""
    report = report if report is not None else DataReport(str(path), "", "fast")
    name = str(path)
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        report.add("fatal", "not_json", "the annotation file does not exist", file=name)
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        report.add("fatal", "not_json", f"not valid JSON ({error})", file=name)
        return None
    except OSError as error:
        report.add("fatal", "not_json", f"cannot read the file ({error})", file=name)
        return None
    if not isinstance(data, dict):
        report.add("fatal", "not_coco", f"the top level is a JSON {type(data).__name__}, not an object with "
                   f"'images', 'annotations' and 'categories'", file=name)
        return None
    problems = [key for key in _REQUIRED if not isinstance(data.get(key), list)]
    if problems:
        present = sorted(str(k) for k in data)[:10]
        report.add("fatal", "not_coco", f"no '{problems[0]}' list (missing or wrong type: {problems}); keys found: "
                   f"{present}. A COCO detection file needs images, annotations and categories lists "
                   f"(tools/convert_dataset.py converts Pascal VOC and YOLO)", file=name)
        return None
    return data


def _finite_number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _parse_bbox(bbox: Any) -> Optional[Tuple[float, float, float, float]]:
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    values = [_finite_number(v) for v in bbox]
    if any(v is None for v in values):
        return None
    return tuple(values)  # type: ignore[return-value]


def _looks_normalized(annotations: Sequence[Dict[str, Any]], sizes: Dict[Any, Tuple[float, float]]) -> bool:
    """All boxes within 0..1 while their images are larger than 2 px: normalised coordinates."""
    boxes = [(_parse_bbox(a.get("bbox")), sizes.get(a.get("image_id"))) for a in annotations]
    boxes = [(b, s) for b, s in boxes if b is not None and s is not None]
    if len(boxes) < 1:
        return False
    return all(max(b) <= 1.0 + 1e-6 and min(b) >= 0 and max(s) > 2 for b, s in boxes)


def _fits_as_xyxy(x: float, y: float, w: float, h: float, width: float, height: float) -> bool:
    """Whether the four numbers of a bbox make a box inside the image when read as ``[x1, y1, x2, y2]``."""
    tol = BORDER_TOLERANCE
    return w > x and h > y and x >= -tol and y >= -tol and w <= width + tol and h <= height + tol


def _file_written_as_xyxy(boxes: Sequence[Tuple[Any, float, float]]) -> Tuple[bool, int]:
    """The whole-file verdict on ``(bbox, image width, image height)`` of every box of a file:
    ``(written as [x1, y1, x2, y2], how many boxes overflow their image as [x, y, w, h] but fit as xyxy)``.

    xyxy when at least half of the overflowing boxes, and at least half of all boxes, fit as xyxy. Then every
    box of the file is xyxy, also those that happen to fit when read as [x, y, w, h].
    """
    overflowing = fit_xyxy = 0
    for bbox, width, height in boxes:
        parsed = _parse_bbox(bbox)
        if parsed is None:
            continue
        x, y, w, h = parsed
        if x + w > width + BORDER_TOLERANCE or y + h > height + BORDER_TOLERANCE:
            overflowing += 1
            fit_xyxy += _fits_as_xyxy(x, y, w, h, width, height)
    verdict = bool(overflowing) and fit_xyxy >= max(1, 0.5 * overflowing) and fit_xyxy >= 0.5 * max(1, len(boxes))
    return verdict, fit_xyxy


def _box_verdict(bbox: Any, width: float, height: float, normalized: bool, xyxy_file: bool = False
                 ) -> Tuple[Optional[str], Optional[List[float]], str]:
    """(code or None, repaired xywh box or None when it must go, message) for one annotation's bbox.

    ``bbox`` is COCO ``[x, y, w, h]`` in pixels (in 0..1 when ``normalized``); with ``xyxy_file`` (the whole-file
    verdict of :func:`_file_written_as_xyxy`) it is read as ``[x1, y1, x2, y2]``, whether or not it would fit as
    ``[x, y, w, h]``. The repaired box is ``[x, y, w, h]`` pixels, clipped to the image.
    """
    parsed = _parse_bbox(bbox)
    if parsed is None:
        return "box_invalid", None, f"bbox {bbox!r} is not 4 finite numbers"
    x, y, w, h = parsed
    if normalized:
        x, y, w, h = x * width, y * height, w * width, h * height
    code: Optional[str] = None
    message = ""
    if xyxy_file:
        code = "box_xyxy"
        message = f"bbox {list(parsed)} read as [x1, y1, x2, y2]: the file is written in xyxy"
        w, h = w - x, h - y
    if w <= 0 or h <= 0:
        return "box_nonpositive", None, f"bbox {list(parsed)} has width {w:g} / height {h:g} <= 0"
    tol = BORDER_TOLERANCE
    overflow = x + w > width + tol or y + h > height + tol
    if code is None and overflow and _fits_as_xyxy(x, y, w, h, width, height):
        code = "box_xyxy"
        message = (f"bbox {list(parsed)}: x+w = {x + w:g} / y+h = {y + h:g} exceed the image ({width:g} x "
                   f"{height:g}) but as [x1, y1, x2, y2] it fits: written as xyxy?")
        w, h = w - x, h - y
    x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return "box_outside", None, f"bbox {list(parsed)} lies outside the image ({width:g} x {height:g})"
    if x2 - x1 < MIN_BOX_SIZE or y2 - y1 < MIN_BOX_SIZE:
        return "box_degenerate", None, (f"bbox {list(parsed)} is {x2 - x1:.2g} x {y2 - y1:.2g} px inside the "
                                        f"image: under {MIN_BOX_SIZE:g} px, training drops it")
    crosses = x < -tol or y < -tol or x + w > width + tol or y + h > height + tol
    if code is None and crosses:
        code = "box_clipped"
        message = f"bbox {list(parsed)} crosses the border of the {width:g} x {height:g} image"
    repaired = [x1, y1, x2 - x1, y2 - y1] if (crosses or code == "box_xyxy" or normalized) else list(parsed)
    return code, repaired, message


_BOX_SEVERITY = {"box_invalid": "error", "box_nonpositive": "error", "box_outside": "error",
                 "box_degenerate": "error", "box_xyxy": "error", "box_clipped": "warning"}


# -------------------------------------------------------------------------------------------- checks


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
    """Check a COCO-format dataset; return every finding (see the module docstring for levels/severities).

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
    from ..imageinfo import check_exif_orientation_mode

    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    check_exif_orientation_mode(exif_orientation)
    report = DataReport(str(annotations), str(images_dir), level)
    if data is None:
        data = load_annotations(annotations, report)
        if data is None:
            return report
    elif not all(isinstance(data.get(key), list) for key in _REQUIRED):
        report.add("fatal", "not_coco", "the dataset dict lacks images/annotations/categories lists",
                   file=str(annotations))
        return report

    categories = _check_entries(report, data, "categories")
    images = _check_entries(report, data, "images")
    anns = _check_entries(report, data, "annotations")
    category_names = _unique_ids(report, categories, "category")
    image_by_id = _unique_ids(report, images, "image")
    _unique_ids(report, anns, "annotation")
    if not data["images"]:
        report.add("fatal", "no_images", "the file lists no images", file=str(annotations))

    sizes = _check_images(report, images_dir, image_by_id, level, allow_outside_images, max_image_pixels,
                          exif_orientation)
    _check_annotations(report, anns, category_names, image_by_id, sizes)
    _statistics(report, data, categories, images, anns, category_names, image_by_id)
    return report


def _check_entries(report: DataReport, data: Dict[str, Any], section: str) -> List[Dict[str, Any]]:
    """Entries of a section that are objects with the required keys (the rest: ``malformed_entry``)."""
    kept = []
    for index, entry in enumerate(data[section]):
        if not isinstance(entry, dict):
            report.add("fatal", "malformed_entry", f"{section}[{index}] is a {type(entry).__name__}, not an object")
            continue
        missing = [key for key in _REQUIRED[section] if key not in entry]
        if missing:
            where = {"annotation_id": entry.get("id")} if section == "annotations" else (
                {"image_id": entry.get("id"), "file": entry.get("file_name")} if section == "images" else {})
            report.add("fatal", "malformed_entry", f"{section}[{index}] has no {missing} key(s)", **where)
            continue
        kept.append(entry)
    return kept


def _unique_ids(report: DataReport, entries: List[Dict[str, Any]], kind: str) -> Dict[Any, Any]:
    """First entry per id; later repeats are ``duplicate_<kind>_id`` findings."""
    first: Dict[Any, Any] = {}
    for entry in entries:
        ident = entry["id"]
        if ident in first:
            where: Dict[str, Any] = {"annotation_id": ident} if kind == "annotation" else (
                {"image_id": ident, "file": entry.get("file_name")} if kind == "image" else {})
            report.add("fatal", f"duplicate_{kind}_id", f"{kind} id {ident!r} appears more than once", **where)
            continue
        first[ident] = entry["name"] if kind == "category" else entry
    return first


def _listing(folder: Path, cache: Dict[Path, Optional[set]]) -> Optional[set]:
    if folder not in cache:
        try:
            cache[folder] = {entry.name for entry in os.scandir(folder) if entry.is_file()}
        except OSError:
            cache[folder] = None
    return cache[folder]


def _check_images(report: DataReport, images_dir: PathLike, image_by_id: Dict[Any, Dict[str, Any]], level: str,
                  allow_outside: bool, max_pixels: Optional[int], exif_orientation: str
                  ) -> Dict[Any, Tuple[float, float]]:
    """Per image: size from the JSON, path, existence; with headers/full the real file (its size as loaded with
    ``exif_orientation``). Returns the ``image id -> (width, height)`` used to judge boxes (the JSON's; the real
    size where the JSON's is bad)."""
    from ..imageinfo import max_image_pixels, read_image_header

    limit = max_image_pixels() if max_pixels is None else int(max_pixels)
    listings: Dict[Path, Optional[set]] = {}
    sizes: Dict[Any, Tuple[float, float]] = {}
    for image_id, entry in image_by_id.items():
        name = str(entry["file_name"])
        width, height = _finite_number(entry["width"]), _finite_number(entry["height"])
        size_ok = width is not None and height is not None and width > 0 and height > 0
        if not size_ok:
            report.add("fatal", "bad_image_size", f"width/height {entry['width']!r} x {entry['height']!r} are not "
                       "positive numbers", image_id=image_id, file=name)
        else:
            sizes[image_id] = (float(width), float(height))
        try:
            path = resolve_image_path(images_dir, name, allow_outside)
        except PathOutsideImagesError as error:
            report.add("fatal", "path_outside", str(error), image_id=image_id, file=name)
            continue
        listing = _listing(path.parent, listings)
        if listing is None or path.name not in listing:
            where = "" if listing is not None else f" (folder '{path.parent}' does not exist)"
            report.add("error", "missing_file", f"image file '{path}' not found{where}", image_id=image_id, file=name)
            continue
        if level == "fast":
            continue
        header = read_image_header(path)
        if header is None and level == "headers":
            report.add("error", "unreadable_image", "not an image file (Pillow does not recognise its header)",
                       image_id=image_id, file=name)
            continue
        if header is not None:
            if limit and header.pixels > limit:
                report.add("error", "image_too_large", f"{header.width} x {header.height} = {header.pixels:,} "
                           f"pixels, above the limit of {limit:,} (raise it with --max-image-pixels / "
                           f"EFFDET_MAX_IMAGE_PIXELS if you trust the file)", image_id=image_id, file=name)
                continue
            real_width, real_height = header.size(exif_orientation)
            if header.rotated:
                view = ("used as displayed" if exif_orientation == "apply" else "used as stored (viewers show it "
                        "rotated/mirrored)")
                other = "ignore" if exif_orientation == "apply" else "apply"
                report.add("warning", "exif_rotated", f"EXIF orientation {header.exif_orientation}: {view}, "
                           f"{real_width} x {real_height} (data.exif_orientation={exif_orientation}); check that "
                           f"the boxes were drawn on that view (data.exif_orientation={other} for the other)",
                           image_id=image_id, file=name)
            if size_ok and (real_width, real_height) != (int(width), int(height)):  # type: ignore[arg-type]
                turned = (f" (EXIF orientation {header.exif_orientation}; data.exif_orientation={exif_orientation})"
                          if header.rotated else "")
                report.add("error", "size_mismatch", f"the file is {real_width} x {real_height} (w x h){turned} "
                           f"but the JSON says {entry['width']} x {entry['height']}", image_id=image_id, file=name,
                           detail={"width": real_width, "height": real_height})
            elif not size_ok:
                sizes[image_id] = (float(real_width), float(real_height))
                _set_detail(report, image_id, "bad_image_size", {"width": real_width, "height": real_height})
        if level == "full":
            _decode(report, path, image_id, name, exif_orientation)
    return sizes


def _set_detail(report: DataReport, image_id: Any, code: str, detail: Dict[str, Any]) -> None:
    for finding in report.findings:
        if finding.code == code and finding.image_id == image_id:
            finding.detail.update(detail)


def _decode(report: DataReport, path: Path, image_id: Any, name: str, exif_orientation: str) -> None:
    from ..preprocess import ImageReadError, load_image

    try:
        load_image(path, exif_orientation)
    except ImageReadError as error:
        code = "image_too_large" if "decompression-bomb" in error.reason else "unreadable_image"
        report.add("error", code, error.reason, image_id=image_id, file=name)


def _check_annotations(report: DataReport, anns: List[Dict[str, Any]], category_names: Dict[Any, str],
                       image_by_id: Dict[Any, Dict[str, Any]], sizes: Dict[Any, Tuple[float, float]]) -> None:
    normalized = _looks_normalized(anns, sizes)
    if normalized:
        report.add("error", "boxes_normalized", f"all {len(anns)} boxes have coordinates in 0..1 while the images "
                   "are larger: the boxes are normalised (e.g. YOLO-style), COCO needs pixels")
    sized = []  # (bbox, image width, image height) for the whole-file xyxy verdict
    for ann in anns:
        ann_id, image_id = ann["id"], ann["image_id"]
        file = image_by_id[image_id]["file_name"] if image_id in image_by_id else None
        if ann["category_id"] not in category_names:
            report.add("fatal", "unknown_category", f"annotation id {ann_id} has category_id {ann['category_id']!r}, "
                       f"which is not in 'categories' (valid ids: {sorted(category_names, key=str)[:20]})",
                       annotation_id=ann_id,
                       image_id=image_id, file=file)
        if image_id not in image_by_id:
            report.add("error", "orphan_annotation", f"image_id {image_id!r} is not in 'images'",
                       annotation_id=ann_id, image_id=image_id)
            continue
        if image_id not in sizes:
            continue
        width, height = sizes[image_id]
        code, _, message = _box_verdict(ann["bbox"], width, height, normalized)
        sized.append((ann["bbox"], width, height))
        if code is not None:
            report.add(_BOX_SEVERITY[code], code, message, annotation_id=ann_id, image_id=image_id, file=file)
        if ann.get("iscrowd"):
            report.add("warning", "crowd_region", "iscrowd=1: an ignore region, not an object",
                       annotation_id=ann_id, image_id=image_id, file=file)
    xyxy_file, fit_xyxy = _file_written_as_xyxy(sized) if not normalized else (False, 0)
    if xyxy_file:
        report.add("error", "box_format_suspect", f"{fit_xyxy} of {len(sized)} boxes overflow their image as "
                   f"[x, y, w, h] but fit as [x1, y1, x2, y2]: the file looks written in xyxy; COCO bbox is "
                   f"[x, y, width, height]. --fix converts every box of the file, also those that fit as "
                   f"[x, y, w, h]")


def _statistics(report: DataReport, data: Dict[str, Any], categories: List[Dict[str, Any]],
                images: List[Dict[str, Any]], anns: List[Dict[str, Any]], category_names: Dict[Any, str],
                image_by_id: Dict[Any, Dict[str, Any]]) -> None:
    boxes_per_category: Counter = Counter()
    boxes_per_image: Counter = Counter()
    areas = []
    for ann in anns:
        if ann.get("iscrowd") or ann["category_id"] not in category_names:
            continue
        boxes_per_image[ann["image_id"]] += 1
        boxes_per_category[ann["category_id"]] += 1
        parsed = _parse_bbox(ann["bbox"])
        if parsed is not None and parsed[2] > 0 and parsed[3] > 0:
            areas.append(parsed[2] * parsed[3])
    for image_id, entry in image_by_id.items():
        if not boxes_per_image.get(image_id):
            report.add("warning", "empty_image", "no boxes (a negative example; fine if intended)",
                       image_id=image_id, file=entry["file_name"])
    balance = [{"id": cid, "name": str(name), "boxes": int(boxes_per_category.get(cid, 0))}
               for cid, name in sorted(category_names.items(), key=lambda item: str(item[0]))]
    for row in balance:
        if row["boxes"] == 0:
            report.add("warning", "unused_category", f"category '{row['name']}' (id {row['id']}) has no boxes: "
                       "the model will never learn it")
    buckets = {name: sum(1 for a in areas if low <= a < high) for name, low, high in COCO_AREA_BUCKETS}
    histogram = []
    for low, high in zip(SIZE_HISTOGRAM_EDGES[:-1], SIZE_HISTOGRAM_EDGES[1:]):
        label = f"{low}-{high}" if math.isfinite(high) else f">= {low}"
        histogram.append((label, sum(1 for a in areas if low <= math.sqrt(a) < high)))
    report.stats.update(
        images=len(data["images"]), annotations=len(data["annotations"]), categories=len(data["categories"]),
        class_balance=balance, box_sizes={"total": len(areas), **buckets, "histogram": histogram},
        crowd_regions=sum(1 for a in anns if a.get("iscrowd")),
        images_without_boxes=sum(1 for i in image_by_id if not boxes_per_image.get(i)),
    )


# ----------------------------------------------------------------------------------------------- fix


def fix_dataset(data: Dict[str, Any], report: DataReport) -> Tuple[Dict[str, Any], List[str]]:
    """A cleaned deep copy of ``data`` and one line per change; ``data`` itself is not modified.

    What happens to each problem is in :data:`DESCRIPTIONS` ("fix: ..."). Image-file problems come from
    ``report`` (run :func:`check_dataset` with level ``"full"`` to catch corrupt files); the JSON problems
    are re-derived here.
    """
    data = copy.deepcopy(data)
    changes: List[str] = []
    file_problems = {f.image_id: f for f in report.findings if f.code in _FILE_CODES}
    real_sizes = {f.image_id: f.detail for f in report.findings
                  if f.code in ("size_mismatch", "bad_image_size") and f.detail}

    categories, seen = [], set()
    for index, entry in enumerate(data["categories"]):
        if not isinstance(entry, dict) or any(k not in entry for k in _REQUIRED["categories"]):
            changes.append(f"dropped malformed categories[{index}]")
        elif entry["id"] in seen:
            changes.append(f"dropped duplicate category id {entry['id']!r} ('{entry['name']}')")
        else:
            seen.add(entry["id"])
            categories.append(entry)
    category_ids = seen

    images, image_ids = [], set()
    for index, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or any(k not in entry for k in _REQUIRED["images"]):
            changes.append(f"dropped malformed images[{index}]")
            continue
        ident = entry["id"]
        if ident in image_ids:
            changes.append(f"dropped duplicate image id {ident!r} ('{entry['file_name']}'); its annotations stay "
                           "with the first entry of that id")
            continue
        if ident in file_problems:
            problem = file_problems[ident]
            changes.append(f"dropped image id {ident!r} ('{entry['file_name']}') and its annotations: {problem.code}")
            continue
        if ident in real_sizes:
            size = real_sizes[ident]
            changes.append(f"image id {ident!r} ('{entry['file_name']}'): width/height {entry.get('width')!r} x "
                           f"{entry.get('height')!r} -> {size['width']} x {size['height']} (the file's real size)")
            entry["width"], entry["height"] = size["width"], size["height"]
        width, height = _finite_number(entry["width"]), _finite_number(entry["height"])
        if width is None or height is None or width <= 0 or height <= 0:
            changes.append(f"dropped image id {ident!r} ('{entry['file_name']}'): no valid size")
            continue
        image_ids.add(ident)
        images.append(entry)
    sizes = {e["id"]: (float(e["width"]), float(e["height"])) for e in images}
    dropped_images = {e["id"] for e in data["images"] if isinstance(e, dict) and "id" in e} - image_ids

    valid_anns = [a for a in data["annotations"]
                  if isinstance(a, dict) and all(k in a for k in _REQUIRED["annotations"])]
    if len(valid_anns) != len(data["annotations"]):
        changes.append(f"dropped {len(data['annotations']) - len(valid_anns)} malformed annotation entries")
    normalized = _looks_normalized(valid_anns, sizes)
    if normalized:
        changes.append("all boxes were normalised (0..1): scaled to pixels by their image's width/height")
    xyxy_file = not normalized and _file_written_as_xyxy(
        [(a["bbox"], *sizes[a["image_id"]]) for a in valid_anns
         if a["image_id"] in sizes and a["category_id"] in category_ids])[0]
    xyxy_summary_at, converted = len(changes), 0  # the summary line goes before the per-box lines
    annotations, ann_ids = [], set()
    next_id = 1 + max([a["id"] for a in valid_anns if isinstance(a["id"], int)] or [0])
    for ann in valid_anns:
        ann_id = ann["id"]
        if ann["category_id"] not in category_ids:
            changes.append(f"dropped annotation id {ann_id!r}: unknown category_id {ann['category_id']!r}")
            continue
        if ann["image_id"] not in image_ids:
            if ann["image_id"] in dropped_images:
                changes.append(f"dropped annotation id {ann_id!r} with its image id {ann['image_id']!r}")
            else:
                changes.append(f"dropped annotation id {ann_id!r}: image id {ann['image_id']!r} is not in 'images'")
            continue
        width, height = sizes[ann["image_id"]]
        code, box, message = _box_verdict(ann["bbox"], width, height, normalized, xyxy_file)
        if box is None:
            changes.append(f"dropped annotation id {ann_id!r}: {code}: {message}")
            continue
        if code is not None or normalized:
            before = ann["bbox"]
            ann["bbox"] = [round(v, 3) for v in box]
            if "area" in ann:
                ann["area"] = round(ann["bbox"][2] * ann["bbox"][3], 3)
            if code is not None:
                changes.append(f"annotation id {ann_id!r}: bbox {before} -> {ann['bbox']} ({code})")
            converted += int(xyxy_file and code == "box_xyxy")
        if ann_id in ann_ids:
            changes.append(f"annotation id {ann_id!r} was used twice: this one renumbered to {next_id}")
            ann["id"] = next_id
            next_id += 1
        ann_ids.add(ann["id"])
        annotations.append(ann)
    if xyxy_file:
        changes.insert(xyxy_summary_at, f"the file is written as [x1, y1, x2, y2] (box_format_suspect): all "
                       f"{converted} boxes converted to [x, y, w, h], also those that fit when read as [x, y, w, h]")
    cleaned = dict(data)
    cleaned.update(images=images, annotations=annotations, categories=categories)
    return cleaned, changes


# ------------------------------------------------------------------------------------------ training


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
