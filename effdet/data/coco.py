"""COCO-format detection dataset with up-front validation.

The JSON is read and checked once, at construction; what is wrong is either fatal (a clear
``ValueError``) or repaired and counted in :attr:`CocoDetection.report` and one summary log line
(logger ``effdet.data``). Per-image targets are packed into flat numpy arrays so DataLoader workers do
not touch (and copy) millions of Python objects.

Boxes: COCO ``[x, y, w, h]`` in the JSON becomes ``[x1, y1, x2, y2]`` float32 in pixels here.
Labels: category ids (any integers, with gaps) sorted ascending become contiguous labels ``0..C-1``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from .checks.boxes import MIN_BOX_SIZE, is_plain_bbox, large_enough, training_box
from .checks.entries import (check_sections, first_entry_per_id, image_size, load_annotations, unknown_category,
                                        well_formed_entries)
from .checks.findings import DataReport
from .checks.paths import FolderListings, PathOutsideImagesError, resolve_image_path
from .collate import limit_opencv_threads
from .transforms import DetectionSample
from .preprocess import ImageReadError, load_image
from ..types import PathLike

__all__ = ["CocoDetection", "MIN_BOX_SIZE"]

logger = logging.getLogger("effdet.data")

# How many report examples (ids / file names) to keep per problem.
_EXAMPLES = 10
# The dataset's report counts of the checker's box codes (effdet.data.checks.boxes.training_box).
_DROPPED_BOX_KINDS = {"box_invalid": "invalid_boxes", "box_nonpositive": "invalid_boxes",
                      "box_outside": "degenerate_boxes", "box_degenerate": "degenerate_boxes"}

SampleDict = dict[str, Any]


class _Problems:
    """Counts and a few example ids per kind of problem found in the annotations."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = defaultdict(int)
        self.examples: dict[str, list[Any]] = defaultdict(list)

    def add(self, kind: str, example: Any) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < _EXAMPLES:
            self.examples[kind].append(example)


def _refuse_fatal(report: DataReport, path: Path) -> None:
    """Raise ``ValueError`` naming the file with the first fatal finding of the checker, if any."""
    fatal = report.of("fatal")
    if fatal:
        raise ValueError(f"annotation file '{path}': {fatal[0].message}")


def _checked_json(path: Path, data: Optional[dict[str, Any]]) -> dict[str, Any]:
    """The COCO dict (read from ``path`` unless given), refused with ``ValueError`` on the checker's first fatal
    finding about the file, its sections, entries and ids (:mod:`effdet.data.checks.entries`)."""
    report = DataReport(str(path), "", "fast")
    if data is None:
        data = load_annotations(path, report)
    else:
        check_sections(report, data, str(path))
    _refuse_fatal(report, path)
    for section in ("categories", "images", "annotations"):
        well_formed_entries(report, data, section)  # type: ignore[arg-type]
    _refuse_fatal(report, path)
    for section, kind in (("categories", "category"), ("images", "image"), ("annotations", "annotation")):
        first_entry_per_id(report, data[section], kind)  # type: ignore[index]
    _refuse_fatal(report, path)
    return data  # type: ignore[return-value]


def _cleaning_keeps(ann: dict[str, Any], box: tuple[float, float, float, float]) -> bool:
    """Whether the cleaned copy of a valid annotation would equal it: its bbox numbers, unclipped (``box`` is the
    clipped xyxy), and ``area`` and a 0/1 ``iscrowd`` present."""
    bbox = ann["bbox"]
    return (isinstance(bbox, list) and is_plain_bbox(bbox)
            and box == (bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]) and "area" in ann
            and ann.get("iscrowd") in (0, 1) and not isinstance(ann.get("iscrowd"), bool))


class CocoDetection(Dataset):
    """A COCO-format detection dataset.

    Args:
        images_dir: folder that ``file_name`` entries are relative to.
        annotations_json: COCO instances JSON (``images``, ``annotations``, ``categories``).
        transform: callable ``DetectionSample -> DetectionSample`` (see ``effdet.data.transforms``);
            None returns raw RGB numpy images and original-pixel boxes.
        check_files: skip image entries whose file does not exist (one folder listing per folder).
        max_load_attempts: how many consecutive samples ``__getitem__`` tries when images fail to load.
        annotations_data: the COCO dict itself (e.g. converted from VOC/YOLO) instead of reading the JSON.
        allow_outside_images: accept ``file_name`` values that are absolute or leave ``images_dir``.
        exif_orientation: ``"apply"`` (default): images are used as displayed (EXIF orientation applied, as
            annotation tools show them), so the JSON's width/height and boxes are those of the displayed image;
            ``"ignore"``: the stored pixels (config ``data.exif_orientation``).

    Attributes:
        category_ids: ``label -> category id`` (sorted ids), length C.
        class_names: ``label -> category name``.
        label_of_category: ``category id -> label``.
        image_ids: image ids of the kept images, in dataset order.
        coco: ``pycocotools.coco.COCO`` over the cleaned annotations (kept images; valid, clipped
            boxes; ``area`` and ``iscrowd`` filled in when absent): what training learns from.
        ground_truth: ``pycocotools.coco.COCO`` of the annotations as the official COCO tools load the file
            (every image, boxes as written, not clipped; :func:`effdet.evaluation.cocoeval.official_ground_truth`): what
            validation and ``tools/eval.py`` score against. Unchanged annotation dicts are shared with ``coco``.
        report: counts and examples of everything repaired or skipped (see *Validation* below).
        failed_files: files that failed to decode at load time, in this process (workers keep their own).

    Validation at construction, by the data checker's rules (:mod:`effdet.data.checks`: ``entries`` for the JSON,
    keys, ids and image sizes, ``paths`` for file names, ``boxes`` for :func:`~effdet.data.checks.boxes.training_box`);
    where the checker reports a ``fatal`` finding the dataset raises on the first one:
        * unknown ``category_id`` -> ``ValueError`` (JSON file, annotation id, bad id, valid ids);
        * malformed JSON, missing keys, duplicate ids, width/height not numbers of at least 1 px -> ``ValueError``
          naming the file and key/id;
        * ``file_name`` absolute or leaving ``images_dir`` (``..``) -> ``ValueError`` unless allowed;
        * annotation on an unknown image id -> skipped and counted (``orphan_annotations``);
        * bbox not 4 finite numbers, or width/height <= 0 -> dropped (``invalid_boxes``);
        * bbox partly outside its image -> clipped (``clipped_boxes``); if a side is then shorter than
          ``MIN_BOX_SIZE`` (1 px) -> dropped (``degenerate_boxes``);
        * image whose file is missing -> skipped (``missing_files``);
        * ``iscrowd=1`` -> kept apart as ignore regions (``crowd_boxes``), not objects;
        * images without annotations are kept (negatives); no image left -> ``ValueError``.
    """

    def __init__(
        self,
        images_dir: PathLike,
        annotations_json: PathLike,
        transform: Optional[Callable[[DetectionSample], DetectionSample]] = None,
        check_files: bool = True,
        max_load_attempts: int = 32,
        annotations_data: Optional[dict[str, Any]] = None,
        allow_outside_images: bool = False,
        exif_orientation: str = "apply",
    ) -> None:
        from ..imageinfo import check_exif_orientation_mode

        self.exif_orientation = check_exif_orientation_mode(exif_orientation)
        self.images_dir = Path(images_dir)
        self.annotations_json = Path(annotations_json)
        # An already-loaded COCO dict (e.g. converted from VOC/YOLO); annotations_json then only names it.
        self._annotations_data = annotations_data
        self.allow_outside_images = bool(allow_outside_images)
        self.transform = transform
        self.max_load_attempts = int(max_load_attempts)
        self.failed_files: set[str] = set()
        self._size_warned: set[str] = set()
        limit_opencv_threads()  # here, in the parent, before DataLoader workers fork
        self._build(check_files)

    # ------------------------------------------------------------------ construction and validation

    def _build(self, check_files: bool) -> None:
        path = self.annotations_json
        data = _checked_json(path, self._annotations_data)
        self._annotations_data = None  # not kept: workers must not inherit millions of Python objects

        names_by_id = {c["id"]: str(c["name"]) for c in data["categories"]}
        if not names_by_id:
            raise ValueError(f"annotation file '{path}' has no categories")
        for ann in data["annotations"]:
            unknown = unknown_category(ann, names_by_id)
            if unknown:
                raise ValueError(f"annotation file '{path}': {unknown}")
        names_by_id = {int(cid): name for cid, name in names_by_id.items()}
        self.category_ids: list[int] = sorted(names_by_id)
        self.class_names: list[str] = [names_by_id[i] for i in self.category_ids]
        self.label_of_category: dict[int, int] = {cid: label for label, cid in enumerate(self.category_ids)}

        problems = _Problems()
        images = self._valid_images(data["images"], check_files, problems)
        image_index = {image["id"]: index for index, image in enumerate(images)}
        all_image_ids = {image["id"] for image in data["images"]}

        objects: list[list[tuple[list[float], int]]] = [[] for _ in images]
        crowds: list[list[list[float]]] = [[] for _ in images]
        kept_annotations = []
        for ann in data["annotations"]:
            if ann["image_id"] not in all_image_ids:
                problems.add("orphan_annotations", ann["id"])
                continue
            index = image_index.get(ann["image_id"])
            if index is None:  # its image was skipped (missing file); not a problem of the annotation
                continue
            box = self._valid_box(ann, images[index], problems)
            if box is None:
                continue
            x1, y1, x2, y2 = box
            if _cleaning_keeps(ann, box):
                cleaned = ann  # the same dict as in the ground truth: no copy
            else:
                cleaned = dict(ann)
                cleaned["bbox"] = [x1, y1, x2 - x1, y2 - y1]
                cleaned.setdefault("area", (x2 - x1) * (y2 - y1))
                cleaned["iscrowd"] = int(bool(ann.get("iscrowd", 0)))
            kept_annotations.append(cleaned)
            if cleaned["iscrowd"]:
                crowds[index].append(list(box))
            else:
                objects[index].append((list(box), self.label_of_category[int(ann["category_id"])]))

        self._pack(images, objects, crowds)
        self.coco = self._make_coco(data, images, kept_annotations)
        from ..evaluation.cocoeval import official_ground_truth

        self.ground_truth = self._make_coco(data, data["images"], official_ground_truth(data)["annotations"])
        self.report = self._make_report(data, images, objects, crowds, problems)
        self._log_summary(problems)

    def _valid_images(self, entries: list[dict[str, Any]], check_files: bool, problems: _Problems) -> list[dict[str, Any]]:
        """The image entries to use: each with a valid size (else ``ValueError``) and a path inside ``images_dir``
        (else ``ValueError``, unless allowed); with ``check_files``, those whose file is missing are skipped."""
        path = self.annotations_json
        for entry in entries:
            if image_size(entry) is None:
                raise ValueError(
                    f"annotation file '{path}': image id {entry['id']} ('{entry['file_name']}') has invalid "
                    f"width/height {entry['width']!r} x {entry['height']!r} (numbers of at least 1 px)"
                )
        paths = []
        for entry in entries:  # absolute names and '..' leaving images_dir are refused unless allowed
            try:
                paths.append(resolve_image_path(self.images_dir, entry["file_name"], self.allow_outside_images))
            except PathOutsideImagesError as error:
                raise ValueError(f"annotation file '{path}': image id {entry['id']}: {error}") from None
        if not check_files:
            return list(entries)
        listings = FolderListings()
        kept = []
        for entry, image_path in zip(entries, paths):
            if listings.has_file(image_path):
                kept.append(entry)
            else:
                problems.add("missing_files", str(entry["file_name"]))
        return kept

    @staticmethod
    def _valid_box(ann: dict[str, Any], image: dict[str, Any], problems: _Problems) -> Optional[tuple[float, float, float, float]]:
        """The annotation's box as training uses it (the checker's :func:`~effdet.data.checks.boxes.training_box`):
        ``[x1, y1, x2, y2]`` pixels clipped to the image, or None (counted) when it is dropped."""
        width, height = image_size(image)  # type: ignore[misc]  (checked in _valid_images)
        verdict = training_box(ann["bbox"], width, height)
        kind = _DROPPED_BOX_KINDS.get(verdict.code or "")
        if kind == "invalid_boxes":
            problems.add(kind, ann["id"])
            return None
        if verdict.clipped:
            problems.add("clipped_boxes", ann["id"])
        if kind is not None:
            problems.add(kind, ann["id"])
            return None
        return verdict.xyxy

    def _pack(
        self,
        images: list[dict[str, Any]],
        objects: list[list[tuple[list[float], int]]],
        crowds: list[list[list[float]]],
    ) -> None:
        """Flat arrays: per-image slices ``[offsets[i], offsets[i+1])`` of boxes/labels/crowd boxes."""
        if not images:
            raise ValueError(
                f"empty dataset: no usable images in '{self.annotations_json}' with images folder "
                f"'{self.images_dir}' (check that file_name entries are relative to that folder)"
            )
        self._image_ids = np.array([int(image["id"]) for image in images], dtype=np.int64)
        self._file_names = np.array([str(image["file_name"]) for image in images])
        self._sizes = np.array([(int(image["height"]), int(image["width"])) for image in images], dtype=np.int64)
        counts = [len(items) for items in objects]
        self._object_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._boxes = np.array([box for items in objects for box, _ in items], dtype=np.float32).reshape(-1, 4)
        self._labels = np.array([label for items in objects for _, label in items], dtype=np.int64)
        crowd_counts = [len(items) for items in crowds]
        self._crowd_offsets = np.concatenate([[0], np.cumsum(crowd_counts)]).astype(np.int64)
        self._crowd_boxes = np.array([box for items in crowds for box in items], dtype=np.float32).reshape(-1, 4)

    @staticmethod
    def _make_coco(data: dict[str, Any], images: list[dict[str, Any]], annotations: list[dict[str, Any]]) -> COCO:
        cleaned = {key: value for key, value in data.items() if key not in ("images", "annotations")}
        cleaned["images"] = list(images)
        cleaned["annotations"] = annotations
        coco = COCO()
        coco.dataset = cleaned
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            coco.createIndex()
        return coco

    def _make_report(
        self,
        data: dict[str, Any],
        images: list[dict[str, Any]],
        objects: list[list[tuple[list[float], int]]],
        crowds: list[list[list[float]]],
        problems: _Problems,
    ) -> dict[str, Any]:
        report: dict[str, Any] = {
            "annotations_json": str(self.annotations_json),
            "images_dir": str(self.images_dir),
            "images_in_json": len(data["images"]),
            "annotations_in_json": len(data["annotations"]),
            "images": len(images),
            "images_without_objects": sum(1 for items in objects if not items),
            "objects": sum(len(items) for items in objects),
            "crowd_regions": sum(len(items) for items in crowds),
            "classes": len(self.category_ids),
            "objects_per_class": np.bincount(self._labels, minlength=len(self.category_ids)).tolist(),
        }
        for kind in ("missing_files", "orphan_annotations", "invalid_boxes", "clipped_boxes", "degenerate_boxes"):
            report[kind] = problems.counts.get(kind, 0)
            report[f"{kind}_examples"] = list(problems.examples.get(kind, []))
        return report

    def _log_summary(self, problems: _Problems) -> None:
        report = self.report
        logger.info(
            "%s: %d images (%d without objects), %d objects, %d crowd regions, %d classes; skipped %d "
            "missing files and %d annotations of unknown images; dropped %d invalid and %d degenerate "
            "boxes; clipped %d boxes",
            self.annotations_json, report["images"], report["images_without_objects"], report["objects"],
            report["crowd_regions"], report["classes"], report["missing_files"],
            report["orphan_annotations"], report["invalid_boxes"], report["degenerate_boxes"],
            report["clipped_boxes"],
        )
        descriptions = {
            "missing_files": "image files not found in '%s' (skipped)" % self.images_dir,
            "orphan_annotations": "annotations whose image_id is not in 'images' (skipped), ids",
            "invalid_boxes": "boxes with width/height <= 0 or non-finite numbers (dropped), annotation ids",
            "degenerate_boxes": "boxes under %g px after clipping to the image (dropped), annotation ids" % MIN_BOX_SIZE,
            "clipped_boxes": "boxes partly outside their image (clipped), annotation ids",
        }
        for kind, text in descriptions.items():
            count = problems.counts.get(kind, 0)
            if count:
                logger.warning("%s: %d %s, e.g. %s", self.annotations_json, count, text, problems.examples[kind])

    # ------------------------------------------------------------------ access

    @property
    def image_ids(self) -> list[int]:
        return self._image_ids.tolist()

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def __len__(self) -> int:
        return len(self._image_ids)

    def source_size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of image ``index`` as the annotation file gives it."""
        height, width = self._sizes[index]
        return int(height), int(width)

    def image_path(self, index: int) -> Path:
        return self.images_dir / str(self._file_names[index])

    def targets(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(boxes [N,4] float32 xyxy original px, labels [N] int64, crowd_boxes [K,4] float32)``."""
        start, stop = self._object_offsets[index], self._object_offsets[index + 1]
        crowd_start, crowd_stop = self._crowd_offsets[index], self._crowd_offsets[index + 1]
        return (
            self._boxes[start:stop].copy(),
            self._labels[start:stop].copy(),
            self._crowd_boxes[crowd_start:crowd_stop].copy(),
        )

    def __getitem__(self, index: int) -> SampleDict:
        """Sample ``index``, or the next loadable one if its image cannot be read.

        Returns a dict: ``image`` (uint8 tensor ``[3,S,S]`` RGB after the transform, else ``H x W x 3``
        numpy RGB), ``boxes`` float32 ``[N,4]`` xyxy in network-input pixels (original pixels without
        a transform), ``labels`` int64 ``[N]`` in ``0..C-1``, ``crowd_boxes`` float32 ``[K,4]``,
        ``image_id`` int, ``orig_size`` ``(h, w)``, ``scale`` float (input px per original px).
        """
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        attempts = min(self.max_load_attempts, len(self))
        for step in range(attempts):
            current = (index + step) % len(self)
            path = self.image_path(current)
            if str(path) in self.failed_files:
                continue
            try:
                image = load_image(path, self.exif_orientation)
            except ImageReadError as error:
                self.failed_files.add(str(path))
                logger.warning("skipping image id %d: %s", int(self._image_ids[current]), error)
                continue
            return self._make_sample(current, image)
        raise RuntimeError(
            f"could not load any of {attempts} consecutive images starting at index {index} of "
            f"'{self.annotations_json}' (images folder '{self.images_dir}'); failed files include "
            f"{sorted(self.failed_files)[:5]}. Check the image files."
        )

    def _make_sample(self, index: int, image: np.ndarray) -> SampleDict:
        boxes, labels, crowd_boxes = self.targets(index)
        orig_h, orig_w = (int(v) for v in self._sizes[index])
        if image.shape[:2] != (orig_h, orig_w):
            path = str(self.image_path(index))
            if path not in self._size_warned:
                self._size_warned.add(path)
                logger.warning(
                    "image '%s' is %dx%d (h x w) as loaded with data.exif_orientation=%s, but the JSON says %dx%d; "
                    "boxes are clipped to the loaded image (EXIF orientation: annotated on the %s pixels? Or a "
                    "replaced file?)", path, image.shape[0], image.shape[1], self.exif_orientation, orig_h, orig_w,
                    "stored" if self.exif_orientation == "apply" else "displayed",
                )
            orig_h, orig_w = image.shape[:2]
            limits = np.array([orig_w, orig_h, orig_w, orig_h], dtype=np.float32)
            boxes = np.clip(boxes, 0, limits)
            crowd_boxes = np.clip(crowd_boxes, 0, limits)
            keep = large_enough(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            boxes, labels = boxes[keep], labels[keep]
        sample = DetectionSample(image=image, boxes=boxes, labels=labels, crowd_boxes=crowd_boxes, scale=1.0)
        if self.transform is not None:
            sample = self.transform(sample)
        return {
            "image": sample.image,
            "boxes": sample.boxes,
            "labels": sample.labels,
            "crowd_boxes": sample.crowd_boxes,
            "image_id": int(self._image_ids[index]),
            "orig_size": (orig_h, orig_w),
            "scale": float(sample.scale),
        }

    def __repr__(self) -> str:
        return (
            f"CocoDetection('{self.annotations_json}', images={len(self)}, classes={self.num_classes}, "
            f"transform={self.transform!r})"
        )
