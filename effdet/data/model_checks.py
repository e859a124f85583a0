"""The data checks that depend on the model's settings: whether the model can see the objects at its input size, and
whether prediction may return them all. Each finding says which settings fit, as ``section.key=value`` overrides.

* :func:`check_object_scale` (``objects_below_anchor``): training letterboxes each image whole into the network input
  (``model.image_size``), or with ``data.tile_size`` each tile of :func:`effdet.data.tiles.tile_coco`. When more than
  half of the objects come out too small for the smallest anchor (:func:`effdet.modeling.anchors.smallest_anchor_side`)
  to match them, i.e. below :func:`~effdet.modeling.anchors.smallest_matchable_side` (the anchor's side / sqrt(2), the
  rule of the anchor-fit check), it warns with the numbers and suggests the tile size that brings the median object up
  to the anchor's side (:func:`fitting_tile_size`): ``data.tile_size`` and the matching ``eval.slice_size``.
* :func:`check_detection_limit` (``objects_over_max_detections``): images with more objects than
  ``eval.max_detections`` (prediction keeps at most that many per image); it suggests the ``eval.max_detections`` that
  fits (the largest count rounded up to the next :data:`DETECTIONS_STEP`).

:func:`check_model_view` runs both on a COCO dict and adds ``warning`` findings to a
:class:`~effdet.data.checks.DataReport`: the numbers in ``detail``, the suggested settings in ``detail["overrides"]``
(:meth:`~effdet.data.checks.DataReport.suggested_overrides` gathers them). ``tools/check_data.py --config`` runs it.
This module sits beside :mod:`effdet.data.checks`, not in it, because it uses :mod:`effdet.data.tiles`, which imports
the checks' box rule.

An *object* is a non-crowd annotation with a finite box of positive width and height on an image with a valid size.
Boxes are COCO ``[x, y, w, h]`` in source pixels; an object's size is ``sqrt(w * h)`` (the anchors' side is their
square-equivalent too).
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from ..modeling.anchors import smallest_anchor_side, smallest_matchable_side
from .checks.boxes import parse_bbox
from .checks.entries import image_size
from .checks.findings import DataReport
from .preprocess import letterbox_scale
from .tiles import TileSettings, tile_coco

if TYPE_CHECKING:
    from ..modeling.variants import ModelConfig

__all__ = ["DETECTIONS_STEP", "TILE_MULTIPLE", "ModelView", "ObjectSizes", "check_detection_limit",
           "check_model_view", "check_object_scale", "fitting_tile_size", "object_sizes", "objects_coco"]

TILE_MULTIPLE = 32  # suggested tile sizes are multiples of this (source pixels)
DETECTIONS_STEP = 100  # a suggested eval.max_detections is the largest count rounded up to a multiple of this


@dataclass(frozen=True)
class ModelView:
    """How training shows images to the model and how many detections prediction keeps, as these checks need it."""

    input_size: tuple[int, int]  # (height, width) of the network input, px
    smallest_anchor: float  # side of the smallest anchor, input px
    tiles: Optional[TileSettings] = None  # data.tile_*; None: every image is learnt from whole
    max_detections: int = 100  # eval.max_detections: detections kept per image

    @classmethod
    def of_model(cls, model: "ModelConfig", tiles: Optional[TileSettings] = None,
                 max_detections: int = 100) -> "ModelView":
        """The view of a resolved model config (its ``image_size``, ``min_level``, ``anchor_scale``)."""
        return cls((int(model.image_size[0]), int(model.image_size[1])),
                   smallest_anchor_side(model.min_level, model.anchor_scale), tiles, int(max_detections))

    @property
    def smallest_object(self) -> float:
        """The smallest object side (input px) that the smallest anchor can match (IoU 0.5)."""
        return smallest_matchable_side(self.smallest_anchor)

    def describe(self) -> str:
        """One line for the report: what the objects were compared with."""
        tiles = (f"tiles of {self.tiles.size} px (data.tile_size, overlap {self.tiles.overlap:g})" if self.tiles
                 else "whole images (no data.tile_size)")
        return (f"input {self.input_size[0]}x{self.input_size[1]} px, smallest anchor {self.smallest_anchor:g} px "
                f"(matches objects from {self.smallest_object:.1f} px), {tiles}, "
                f"eval.max_detections={self.max_detections}")


@dataclass(frozen=True)
class ObjectSizes:
    """The objects' sizes ``sqrt(w * h)``: in source pixels and at the network input (float64 ``[N]`` each)."""

    source: np.ndarray
    at_input: np.ndarray

    @property
    def count(self) -> int:
        return int(len(self.source))

    def below(self, side: float) -> int:
        """How many objects are smaller than ``side`` at the input."""
        return int(np.count_nonzero(self.at_input < side))

    def mostly_below(self, side: float) -> bool:
        """Whether more than half of the objects are smaller than ``side`` at the input."""
        return self.count > 0 and 2 * self.below(side) > self.count

    @property
    def median_source(self) -> float:
        return float(np.median(self.source)) if self.count else 0.0

    @property
    def median_at_input(self) -> float:
        return float(np.median(self.at_input)) if self.count else 0.0


def objects_coco(data: dict[str, Any]) -> dict[str, Any]:
    """The objects of a COCO dict (that may hold malformed entries): a COCO dict of the images with a valid size
    (``id``, ``width``, ``height``) and their objects (``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``
    floats, ``iscrowd`` 0); the first entry of a duplicated image id counts. What the measures below and
    :func:`effdet.data.tiles.tile_coco` read."""
    images: dict[Any, dict[str, Any]] = {}
    for entry in data.get("images") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), Hashable) or entry["id"] in images:
            continue
        size = image_size(entry)
        if size is not None:
            images[entry["id"]] = {"id": entry["id"], "file_name": entry.get("file_name"),
                                   "width": int(size[0]), "height": int(size[1])}
    annotations = []
    for ann in data.get("annotations") or []:
        if (not isinstance(ann, dict) or ann.get("iscrowd") or not isinstance(ann.get("image_id"), Hashable)
                or ann["image_id"] not in images):
            continue
        box = parse_bbox(ann.get("bbox"))
        if box is None or box[2] <= 0 or box[3] <= 0:
            continue
        annotations.append({"id": len(annotations) + 1, "image_id": ann["image_id"],
                            "category_id": ann.get("category_id"), "bbox": list(box), "iscrowd": 0})
    return {"images": list(images.values()), "annotations": annotations,
            "categories": list(data.get("categories") or [])}


def object_sizes(coco: dict[str, Any], input_size: tuple[int, int]) -> ObjectSizes:
    """The sizes of ``coco``'s non-crowd boxes (an :func:`objects_coco` dict, or the tiles of :func:`tile_coco`),
    each image (or tile) letterboxed whole into ``input_size`` ``(height, width)``."""
    scale_of = {image["id"]: letterbox_scale(image["height"], image["width"], input_size) for image in coco["images"]}
    source, at_input = [], []
    for ann in coco["annotations"]:
        if ann.get("iscrowd") or ann["image_id"] not in scale_of:
            continue
        side = math.sqrt(float(ann["bbox"][2]) * float(ann["bbox"][3]))
        source.append(side)
        at_input.append(side * scale_of[ann["image_id"]])
    return ObjectSizes(np.asarray(source, np.float64), np.asarray(at_input, np.float64))


def fitting_tile_size(objects: dict[str, Any], view: ModelView, median_source: float) -> tuple[int, ObjectSizes]:
    """The ``data.tile_size`` (source px) whose tiles show the objects large enough for the smallest anchor.

    The tile whose letterbox scale (``min(input side) / tile``) takes an object of ``median_source`` px to the
    smallest anchor's side, rounded down to a multiple of :data:`TILE_MULTIPLE`, never smaller than the input's short
    side (tiles are never enlarged: 1:1 at most). Then, while most boxes of its tiles (:func:`tile_coco` with the
    view's overlap and visibility rule) are still below :attr:`ModelView.smallest_object`, :data:`TILE_MULTIPLE`
    smaller, down to the input's side. Returns ``(tile size, the sizes of the boxes in its tiles)``; those sizes say
    whether it fits.
    """
    shortest = min(view.input_size)
    ideal = shortest * median_source / view.smallest_anchor
    tile = max(shortest, int(ideal // TILE_MULTIPLE) * TILE_MULTIPLE)
    settings = view.tiles or TileSettings(tile)
    while True:
        sizes = object_sizes(tile_coco(objects, dataclasses.replace(settings, size=tile)), view.input_size)
        if not sizes.mostly_below(view.smallest_object) or tile <= shortest:
            return tile, sizes
        tile = max(shortest, tile - TILE_MULTIPLE)


def check_object_scale(report: DataReport, objects: dict[str, Any], view: ModelView) -> Optional[dict[str, Any]]:
    """Add an ``objects_below_anchor`` warning when more than half of the objects (:func:`objects_coco`), as training
    presents them (whole images, or the tiles of ``view.tiles``), are too small at the input for the smallest anchor
    to match (:attr:`ModelView.smallest_object`); return its ``detail`` (None when they are not)."""
    tiles = view.tiles
    sizes = object_sizes(objects if tiles is None else tile_coco(objects, tiles), view.input_size)
    anchor, least = view.smallest_anchor, view.smallest_object
    if not sizes.mostly_below(least):
        return None
    height, width = view.input_size
    below = sizes.below(least)
    seen = ("once each image is letterboxed whole into the" if tiles is None
            else f"with data.tile_size={tiles.size}, each tile letterboxed into the")
    things = "objects" if tiles is None else "boxes in the tiles"
    text = (f"{below} of {sizes.count} {things} ({below / sizes.count:.0%}) are smaller than {least:.1f} px {seen} "
            f"{height}x{width} input, too small for the smallest anchor ({anchor:g} px) to match: median object "
            f"{sizes.median_source:.1f} px in the source, {sizes.median_at_input:.1f} px at the input")
    whole = sizes if tiles is None else object_sizes(objects, view.input_size)  # the objects, not cut by tiles
    median_source = whole.median_source
    tile, tiled = fitting_tile_size(objects, view, median_source)
    fits = not tiled.mostly_below(least)
    overrides = {"data.tile_size": tile, "eval.slice_size": tile}
    settings = " ".join(f"{key}={value}" for key, value in overrides.items())
    if fits:
        text += (f". Tiles of {tile} px show them at {tiled.median_at_input:.1f} px (median; {tiled.below(least)} of "
                 f"{tiled.count} boxes in the tiles below {least:.1f} px): {settings}")
    else:
        text += (f". Even tiles of the input's size ({tile} px, 1:1) leave {tiled.below(least)} of {tiled.count} "
                 f"boxes below {least:.1f} px (median {tiled.median_at_input:.1f} px): {settings} is the most tiles "
                 f"do; also lower model.anchor_scale (tools/anchor_fit.py suggests one) or enlarge the tiles with a "
                 f"larger model.image_size")
    detail = {"objects": sizes.count, "below_smallest_object": below, "smallest_object": round(least, 2),
              "smallest_anchor": anchor, "median_source_side": round(sizes.median_source, 2),
              "median_input_side": round(sizes.median_at_input, 2), "input_size": [height, width],
              "tile_size": tiles.size if tiles else None, "suggested_tile_size": tile,
              "suggested_median_input_side": round(tiled.median_at_input, 2),
              "suggested_below_smallest_object": tiled.below(least), "suggested_boxes": tiled.count,
              "tiles_fit": fits, "overrides": overrides}
    report.add("warning", "objects_below_anchor", text, detail=detail)
    return detail


def check_detection_limit(report: DataReport, objects: dict[str, Any], view: ModelView) -> Optional[dict[str, Any]]:
    """Add an ``objects_over_max_detections`` warning when images hold more objects (:func:`objects_coco`) than
    ``view.max_detections``, naming the image with the most; return its ``detail`` (None when none do)."""
    counts = Counter(ann["image_id"] for ann in objects["annotations"])
    limit = view.max_detections
    over = {image_id: count for image_id, count in counts.items() if count > limit}
    if not over:
        return None
    most_id, most = max(over.items(), key=lambda item: item[1])
    suggested = -(-most // DETECTIONS_STEP) * DETECTIONS_STEP
    overrides = {"eval.max_detections": suggested}
    file = next((image.get("file_name") for image in objects["images"] if image["id"] == most_id), None)
    text = (f"{len(over)} of {len(objects['images'])} images hold more objects than eval.max_detections={limit} "
            f"(the most: {most} objects, in this image): prediction keeps at most {limit} detections per image, so "
            f"the rest are never found: eval.max_detections={suggested}")
    detail = {"images_over": len(over), "images": len(objects["images"]), "largest_count": most,
              "max_detections": limit, "suggested_max_detections": suggested, "overrides": overrides}
    report.add("warning", "objects_over_max_detections", text, image_id=most_id, file=file, detail=detail)
    return detail


def check_model_view(report: DataReport, data: dict[str, Any], view: ModelView) -> None:
    """Both checks on a COCO dict (``data``, as loaded: malformed entries are left out); records ``view`` in
    ``report.stats["model_view"]``."""
    objects = objects_coco(data)
    report.stats["model_view"] = view.describe()
    check_object_scale(report, objects, view)
    check_detection_limit(report, objects, view)
