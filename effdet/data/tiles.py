"""Tiled training of large images: each image with a side longer than ``data.tile_size`` is learnt from as the
windows of a grid, made on the fly (nothing is written to disk), so that objects appear at the scale that sliced
inference (:mod:`effdet.ops.slicing`, ``eval.slice_size``) will show them at prediction time.

Config keys (``data`` section, see :class:`TileSettings`): ``tile_size`` (source pixels; null = off, every image is
learnt from whole), ``tile_overlap`` (fraction of ``tile_size`` that neighbouring tiles share), ``tile_min_visible``
and ``tile_empty_fraction``.

* The windows: :func:`tile_windows`, the grid of sliced inference (:func:`effdet.ops.slicing.slice_grid`): ``tile_size
  x tile_size`` windows every ``tile_size * (1 - tile_overlap)`` px, the last of each row and column flush with the
  image's edge; an image whose sides are both at most ``tile_size`` is one window, the whole image.
* The boxes of a window: :func:`boxes_in_window`. A box cut by the window's edge is kept, clipped to the window, when
  at least ``tile_min_visible`` of its area lies inside and both sides of the clipped part are at least
  :data:`~effdet.data.checks.boxes.MIN_BOX_SIZE` px (the random crop's rule,
  :func:`effdet.data.transforms.visible_boxes_mask`); crowd regions are kept clipped whenever such a part is inside.
  Training (:class:`TiledDetection`), the start-up anchor check and the data checker (:func:`tile_coco`) use this
  one rule.
* Each epoch (:meth:`TiledDetection.epoch_tiles`) learns from every tile that holds a box and from a share
  ``tile_empty_fraction`` of the tiles that hold none, drawn from ``(seed, epoch)``: a pure function, so the
  resumable sampler (:mod:`effdet.data.resumable`) shards, shuffles and resumes tiles exactly as it does images.

Boxes: ``[x1, y1, x2, y2]`` float32 pixels. Windows: ``int64 [x1, y1, x2, y2]`` source pixels (``x2``/``y2``
exclusive).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from torch.utils.data import Dataset

from ..ops.slicing import slice_grid
from .checks.boxes import MIN_BOX_SIZE
from .transforms import DetectionSample, Transform, visible_boxes_mask

__all__ = ["TileSettings", "TiledDetection", "boxes_in_window", "tile_coco", "tile_problems", "tile_windows"]

logger = logging.getLogger("effdet.data")

_EMPTY_DRAW = 0x7113  # mixed into the (seed, epoch) seed of the empty tiles' draw


@dataclass(frozen=True)
class TileSettings:
    """How large images are cut for training (the ``data.tile_*`` keys)."""

    size: int  # tile side in source pixels
    overlap: float = 0.2  # fraction of `size` that neighbouring tiles share, in [0, 1)
    min_visible: float = 0.5  # share of a cut box's area that must lie inside a tile for its clipped part to be kept
    empty_fraction: float = 0.1  # share of the tiles without any box that each epoch keeps, in [0, 1]

    @classmethod
    def from_config(cls, data: Any) -> Optional["TileSettings"]:
        """The settings of a config's ``data`` section, or None when ``data.tile_size`` is null (tiling off)."""
        size = data.get("tile_size") if hasattr(data, "get") else getattr(data, "tile_size", None)
        if size is None:
            return None
        return cls(int(size), float(data.tile_overlap), float(data.tile_min_visible), float(data.tile_empty_fraction))


def tile_problems(data: Any) -> dict[str, str]:
    """``{key: what is wrong}`` for the ``data.tile_*`` keys of a config's ``data`` section (empty when valid)."""
    problems = {}
    size = data.get("tile_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        problems["tile_size"] = f"must be null (no tiles) or an integer >= 1 (pixels of the source image), got {size!r}"
    if not 0.0 <= float(data.tile_overlap) < 1.0:
        problems["tile_overlap"] = f"must be in [0, 1) (a fraction of tile_size), got {data.tile_overlap}"
    if not 0.0 < float(data.tile_min_visible) <= 1.0:
        problems["tile_min_visible"] = f"must be in (0, 1] (a share of a box's area), got {data.tile_min_visible}"
    if not 0.0 <= float(data.tile_empty_fraction) <= 1.0:
        problems["tile_empty_fraction"] = f"must be in [0, 1], got {data.tile_empty_fraction}"
    return problems


def tile_windows(height: int, width: int, settings: TileSettings) -> np.ndarray:
    """The tiles of an image of ``height x width`` px: ``int64 [T, 4]`` xyxy windows in source pixels, row by row
    (one window, the whole image, when both sides are at most ``settings.size``)."""
    return slice_grid(int(height), int(width), settings.size, settings.overlap)


def boxes_in_window(boxes: np.ndarray, window: Any, min_visible: float) -> tuple[np.ndarray, np.ndarray]:
    """The boxes a window shows.

    Args:
        boxes: ``float [N, 4]`` xyxy source pixels.
        window: ``[x1, y1, x2, y2]`` source pixels.
        min_visible: share of a box's area that must lie inside the window (0: any part of at least
            ``MIN_BOX_SIZE`` px per side).

    Returns:
        ``(clipped, keep)``: ``float32 [K, 4]`` the kept boxes clipped to the window, in the window's pixels (origin at
        its top-left corner), and ``keep`` ``bool [N]``, which of ``boxes`` they are.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    x1, y1, x2, y2 = (float(v) for v in window)
    clipped = np.stack([np.clip(boxes[:, 0], x1, x2), np.clip(boxes[:, 1], y1, y2),
                        np.clip(boxes[:, 2], x1, x2), np.clip(boxes[:, 3], y1, y2)], axis=1)
    full_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = visible_boxes_mask(clipped, full_area, MIN_BOX_SIZE, min_visible)
    shift = np.array([x1, y1, x1, y1], np.float32)
    return (clipped[keep] - shift).astype(np.float32).reshape(-1, 4), keep


def tile_coco(coco: dict[str, Any], settings: TileSettings) -> dict[str, Any]:
    """A COCO dict of the tiles of ``coco``'s images: one ``images`` entry per tile (``id`` 1.., its ``width`` /
    ``height``, ``source_image_id``, ``window``) and the non-crowd boxes each tile keeps (:func:`boxes_in_window`),
    as ``bbox`` ``[x, y, w, h]`` in the tile's pixels; ``categories`` as given. What the start-up anchor check and the
    data checker measure when tiles are on: the boxes as training presents them."""
    by_image: dict[Any, list[list[float]]] = {}
    classes: dict[Any, list[Any]] = {}
    for ann in coco.get("annotations", []):
        bbox = ann.get("bbox")
        if ann.get("iscrowd", 0) or not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            continue
        x, y, w, h = (float(v) for v in bbox)
        if w <= 0 or h <= 0:
            continue
        by_image.setdefault(ann["image_id"], []).append([x, y, x + w, y + h])
        classes.setdefault(ann["image_id"], []).append(ann.get("category_id"))
    images, annotations = [], []
    for image in coco.get("images", []):
        boxes = np.asarray(by_image.get(image["id"], []), np.float32).reshape(-1, 4)
        labels = classes.get(image["id"], [])
        for window in tile_windows(int(image["height"]), int(image["width"]), settings):
            tile_id = len(images) + 1
            images.append({"id": tile_id, "width": int(window[2] - window[0]), "height": int(window[3] - window[1]),
                           "source_image_id": image["id"], "window": [int(v) for v in window]})
            clipped, keep = boxes_in_window(boxes, window, settings.min_visible)
            for box, label in zip(clipped, [c for c, k in zip(labels, keep) if k]):
                annotations.append({"id": len(annotations) + 1, "image_id": tile_id, "category_id": label,
                                    "iscrowd": 0, "bbox": [float(box[0]), float(box[1]), float(box[2] - box[0]),
                                                           float(box[3] - box[1])]})
    return {"images": images, "annotations": annotations, "categories": list(coco.get("categories", []))}


class TiledDetection(Dataset):
    """The tiles of a detection dataset, cut on the fly, each through ``transform`` like a whole image.

    Args:
        images: a dataset of whole images with ``transform=None`` (:class:`effdet.data.CocoDetection`, which also
            serves VOC and YOLO data): its items give the source image and its boxes in source pixels.
        settings: the tile size, overlap, visibility rule and share of empty tiles.
        transform: the training transform (``DetectionSample -> DetectionSample``) applied to each tile.
        seed: the run's seed; with the epoch it draws which tiles without boxes an epoch keeps.

    Items are keyed by position in an epoch's tile list (:meth:`epoch_item`; a plain index means epoch 0) and have
    the keys of :class:`~effdet.data.CocoDetection` items; ``orig_size`` is the tile's ``(h, w)`` and ``image_id``
    its source image's. ``len()`` is the number of tiles per epoch (the same every epoch).
    """

    def __init__(self, images: Any, settings: TileSettings, transform: Optional[Transform], seed: int = 0) -> None:
        if images.transform is not None:
            raise ValueError("TiledDetection needs the whole-image dataset without a transform (it crops first)")
        self.images = images
        self.settings = settings
        self.transform = transform
        self.seed = int(seed)
        self._image_ids = np.asarray(images.image_ids, np.int64)
        tile_image, windows, counts = [], [], []
        for index in range(len(images)):
            height, width = images.source_size(index)
            boxes = images.targets(index)[0]
            for window in tile_windows(height, width, settings):
                tile_image.append(index)
                windows.append(window)
                counts.append(int(boxes_in_window(boxes, window, settings.min_visible)[1].sum()))
        self.tile_image = np.asarray(tile_image, np.int64)
        self.windows = np.asarray(windows, np.int64).reshape(-1, 4)
        self.object_counts = np.asarray(counts, np.int64)
        self._with_objects = np.flatnonzero(self.object_counts > 0)
        self._empty = np.flatnonzero(self.object_counts == 0)
        keep = int(round(settings.empty_fraction * len(self._empty)))
        if len(self._with_objects) == 0:
            keep = max(keep, 1)  # a dataset without any box still has an epoch
        self.empty_per_epoch = keep
        self._epoch_tiles: Optional[tuple[int, np.ndarray]] = None  # (epoch, its tiles), the last one drawn
        logger.info("tiles of %d px (overlap %g): %d images -> %d tiles, %d with boxes; each epoch learns from those "
                    "and %d of the %d tiles without boxes (data.tile_empty_fraction=%g)", settings.size,
                    settings.overlap, len(images), len(self.windows), len(self._with_objects), keep, len(self._empty),
                    settings.empty_fraction)

    # ------------------------------------------------------------------ what the whole-image dataset also says

    @property
    def class_names(self) -> list[str]:
        return self.images.class_names

    @property
    def category_ids(self) -> list[int]:
        return self.images.category_ids

    @property
    def num_classes(self) -> int:
        return self.images.num_classes

    # ------------------------------------------------------------------ epochs

    def __len__(self) -> int:
        return len(self._with_objects) + self.empty_per_epoch

    def epoch_tiles(self, epoch: int) -> np.ndarray:
        """The tile ids (rows of :attr:`windows`) epoch ``epoch`` learns from, ascending: every tile with a box and
        :attr:`empty_per_epoch` tiles without, drawn from ``(seed, epoch)``."""
        if self._epoch_tiles is not None and self._epoch_tiles[0] == int(epoch):
            return self._epoch_tiles[1]  # the draw is made once per epoch in each process, not once per tile
        rng = np.random.default_rng([self.seed & 0xFFFFFFFF, int(epoch), _EMPTY_DRAW])
        empty = rng.choice(self._empty, size=self.empty_per_epoch, replace=False) if self.empty_per_epoch else []
        tiles = np.sort(np.concatenate([self._with_objects, np.asarray(empty, np.int64)]))
        self._epoch_tiles = (int(epoch), tiles)
        return tiles

    def epoch_item(self, epoch: int, index: int) -> dict[str, Any]:
        """Position ``index`` of epoch ``epoch``'s tile list, cut from its image and transformed."""
        if not 0 <= index < len(self):
            raise IndexError(f"tile {index} out of range for {len(self)} tiles per epoch")
        return self.tile(int(self.epoch_tiles(epoch)[index]))

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.epoch_item(0, index)

    def tile(self, tile_id: int) -> dict[str, Any]:
        """Tile ``tile_id`` (a row of :attr:`windows`) as a sample. If its image cannot be read, the whole-image
        dataset gives the next readable image; its first tile is used then (and when the image as loaded is smaller
        than its annotation says and the window starts beyond it; a window that only reaches beyond is clipped)."""
        source = self.images[int(self.tile_image[tile_id])]
        image = source["image"]
        window = self.windows[tile_id]
        height, width = image.shape[:2]  # the image as loaded (its size may differ from the JSON's: clip to it)
        if (source["image_id"] != int(self._image_ids[self.tile_image[tile_id]])
                or window[0] >= width or window[1] >= height):  # another image, or a window beyond the loaded one
            window = tile_windows(height, width, self.settings)[0]
        x1, y1 = int(window[0]), int(window[1])
        x2, y2 = min(int(window[2]), width), min(int(window[3]), height)
        boxes, keep = boxes_in_window(source["boxes"], (x1, y1, x2, y2), self.settings.min_visible)
        crowd, _ = boxes_in_window(source["crowd_boxes"], (x1, y1, x2, y2), 0.0)
        sample = DetectionSample(image=np.ascontiguousarray(image[y1:y2, x1:x2]), boxes=boxes,
                                 labels=np.asarray(source["labels"])[keep], crowd_boxes=crowd, scale=1.0)
        if self.transform is not None:
            sample = self.transform(sample)
        return {"image": sample.image, "boxes": sample.boxes, "labels": sample.labels,
                "crowd_boxes": sample.crowd_boxes, "image_id": source["image_id"], "orig_size": (y2 - y1, x2 - x1),
                "scale": float(sample.scale)}

    def __repr__(self) -> str:
        return (f"TiledDetection({self.images!r}, tile_size={self.settings.size}, tiles={len(self.windows)}, "
                f"per_epoch={len(self)})")
