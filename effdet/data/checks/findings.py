"""The findings model of the data checks: :class:`Finding` (one problem, with where it is), :class:`DataReport`
(every finding of one annotation file, plus statistics, with the human report) and what each code means."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from .statistics import format_statistics

SEVERITIES = ("fatal", "error", "warning", "info")

# What each code means and what --fix does about it (shown in the report legend and the docs).
DESCRIPTIONS: dict[str, str] = {
    "not_json": "the annotation file is not readable JSON",
    "not_coco": "the JSON is not a COCO detection file (needs images, annotations, categories lists)",
    "malformed_entry": "an entry is not an object or lacks a required key (fix: dropped)",
    "duplicate_category_id": "two categories share an id (fix: the first is kept)",
    "duplicate_image_id": "two images share an id (fix: the first is kept)",
    "duplicate_annotation_id": "two annotations share an id (fix: renumbered)",
    "unknown_category": "annotation of a category id not in 'categories' (fix: dropped)",
    "bad_image_size": "image width/height missing, not a number or under 1 px (fix: the real size, if readable)",
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
    "objects_below_anchor": "most objects are too small for the smallest anchor to match (below its side / sqrt(2)) "
                            "at the model's input (images letterboxed whole, or the tiles of data.tile_size): "
                            "suggests data.tile_size and eval.slice_size",
    "objects_over_max_detections": "images with more objects than eval.max_detections: suggests the "
                                   "eval.max_detections that fits",
    "class_balance": "boxes per category",
    "box_sizes": "box sizes (COCO area buckets)",
}


class DataCheckError(ValueError):
    """The data cannot train as it is; ``report`` holds every finding."""

    def __init__(self, message: str, report: "DataReport"):
        super().__init__(message)
        self.report = report


@dataclass
class Finding:
    """One problem or observation. ``file`` / ``image_id`` / ``annotation_id`` say where."""

    severity: str
    code: str
    message: str
    file: Optional[str] = None
    image_id: Any = None
    annotation_id: Any = None
    detail: dict[str, Any] = field(default_factory=dict)

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
    findings: list[Finding] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    def add(self, severity: str, code: str, message: str, **where: Any) -> Finding:
        finding = Finding(severity, code, message, **where)
        self.findings.append(finding)
        return finding

    def of(self, *severities: str) -> list[Finding]:
        return [f for f in self.findings if f.severity in severities]

    def codes(self, *severities: str) -> Counter:
        return Counter(f.code for f in self.findings if not severities or f.severity in severities)

    def suggested_overrides(self) -> dict[str, Any]:
        """The settings the findings suggest, ``{"section.key": value}`` (from each finding's ``detail["overrides"]``,
        e.g. ``{"data.tile_size": 256, "eval.slice_size": 256}``), in the order found."""
        overrides: dict[str, Any] = {}
        for finding in self.findings:
            overrides.update(finding.detail.get("overrides") or {})
        return overrides

    def set_detail(self, image_id: Any, code: str, detail: dict[str, Any]) -> None:
        """Add ``detail`` to the findings of ``code`` about image ``image_id`` (e.g. the real size, for --fix)."""
        for finding in self.findings:
            if finding.code == code and finding.image_id == image_id:
                finding.detail.update(detail)

    @property
    def can_train(self) -> bool:
        """No fatal finding and no error: training will see exactly what the JSON says."""
        return not self.of("fatal", "error")

    @property
    def exit_code(self) -> int:
        """0: the data can train as it is; 1: errors or fatal problems (see :attr:`can_train`)."""
        return 0 if self.can_train else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "annotations": self.annotations, "images_dir": self.images_dir, "level": self.level,
            "can_train": self.can_train, "counts": dict(self.codes()),
            "findings": [asdict(f) for f in self.findings], "stats": self.stats,
            "suggested_overrides": self.suggested_overrides(),
        }

    def format_text(self, max_per_code: int = 20) -> str:
        """The human report: problems by severity (at most ``max_per_code`` lines per code), class balance,
        box sizes, verdict."""
        lines = [f"check of '{self.annotations}' (images folder '{self.images_dir}', level {self.level})"]
        stats = self.stats
        if "images" in stats:
            lines.append(f"  {stats['images']} images, {stats['annotations']} annotations, "
                         f"{stats['categories']} categories")
        if "model_view" in stats:
            lines.append(f"  model view: {stats['model_view']}")
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
            by_code: dict[str, list[Finding]] = defaultdict(list)
            for finding in found:
                by_code[finding.code].append(finding)
            for code, items in by_code.items():
                lines.append(f"  {code} ({len(items)}): {DESCRIPTIONS.get(code, '')}")
                for finding in items[:max_per_code]:
                    lines.append(f"    {finding.line()}")
                if len(items) > max_per_code:
                    lines.append(f"    ... and {len(items) - max_per_code} more (--max-lines to see more)")
        lines += format_statistics(stats)
        overrides = self.suggested_overrides()
        if overrides:
            lines += ["", "suggested settings (overrides for tools/train.py CONFIG ...): "
                      + " ".join(f"{key}={value}" for key, value in overrides.items())]
        lines.append("")
        fatal, errors, warnings = len(self.of("fatal")), len(self.of("error")), len(self.of("warning"))
        if self.can_train:
            lines.append(f"verdict: the data can train ({warnings} warnings).")
        else:
            lines.append(f"verdict: CANNOT train as it is: {fatal} fatal, {errors} errors, {warnings} warnings. "
                         f"--fix OUT.json writes a cleaned copy and lists every change.")
        return "\n".join(lines)
