"""Box-aware image transforms (OpenCV, numpy) for detection samples.

A transform is a callable ``DetectionSample -> DetectionSample``. A sample holds

* ``image``: ``H x W x 3`` uint8 RGB numpy array (a ``[3, S, S]`` uint8 tensor after :class:`ToTensor`),
* ``boxes``: float32 ``[N, 4]`` xyxy in the current image's pixels (continuous coordinates: pixel
  ``i`` covers ``[i, i+1)``),
* ``labels``: int64 ``[N]``, contiguous class indices,
* ``crowd_boxes``: float32 ``[K, 4]`` xyxy ignore regions (``iscrowd=1``),
* ``scale``: current-image pixels per original-image pixel (bookkeeping for mapping back).

Randomness
----------
Random transforms draw from a numpy ``Generator``. Pass ``rng=`` for a fixed stream (tests). By
default each call uses :func:`torch_seeded_rng`, a generator seeded by one draw from torch's default
generator, so augmentation follows the torch seed: DataLoader seeds torch differently in every worker
(``base_seed + worker_id``), so workers never repeat each other; the stream moves on from epoch to
epoch (also with persistent workers); and with ``num_workers=0`` it follows ``torch.manual_seed`` /
``lightning.seed_everything``, so a seeded run is reproducible. ``worker_init_fn`` needs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence, Union

import cv2
import numpy as np
import torch
from PIL import Image

from ..choices import TRAIN_RESIZE_MODES
from ..ops.boxes import flip_boxes_horizontal
from .preprocess import (
    AREA_INTERPOLATION_BELOW,
    IMAGENET_MEAN,
    SizeLike,
    as_size,
    fill_from_mean,
    image_to_tensor,
    letterbox,
)

__all__ = [
    "Compose",
    "DetectionSample",
    "Letterbox",
    "RandomHorizontalFlip",
    "RandomScaleCrop",
    "ToTensor",
    "eval_transforms",
    "torch_seeded_rng",
    "train_transforms",
    "visible_boxes_mask",
]

FillLike = Union[int, Sequence[int], None]


@dataclass
class DetectionSample:
    """One image with its boxes; see the module docstring for shapes and units."""

    image: Union[np.ndarray, torch.Tensor]
    boxes: np.ndarray
    labels: np.ndarray
    crowd_boxes: np.ndarray
    scale: float = 1.0


Transform = Callable[[DetectionSample], DetectionSample]


def torch_seeded_rng() -> np.random.Generator:
    """A numpy generator seeded by one 63-bit draw from torch's default generator (about 20 us)."""
    seed = int(torch.randint(0, 2**63 - 1, (), dtype=torch.int64))
    return np.random.default_rng(seed)


def _fill_value(fill: FillLike) -> tuple[int, int, int]:
    if fill is None:
        return fill_from_mean(IMAGENET_MEAN)
    if isinstance(fill, (int, np.integer)):
        return (int(fill),) * 3  # type: ignore[return-value]
    values = tuple(int(v) for v in fill)
    if len(values) != 3:
        raise ValueError(f"fill must be an int or 3 values, got {fill!r}")
    return values  # type: ignore[return-value]


def visible_boxes_mask(
    boxes: np.ndarray, full_area: np.ndarray, min_size: float, min_visible: float
) -> np.ndarray:
    """Mask ``[N]`` of clipped boxes (xyxy ``[N, 4]``) to keep: both sides >= ``min_size`` px and the visible area
    >= ``min_visible`` of ``full_area`` ``[N]`` (the box's area before clipping, in the same pixels). The one rule of
    the random crop, the tiles of tiled training (:mod:`effdet.data.tiles`) and the data checker's tile figures."""
    width = boxes[:, 2] - boxes[:, 0]
    height = boxes[:, 3] - boxes[:, 1]
    keep = (width >= min_size) & (height >= min_size)
    if min_visible > 0:
        keep &= width * height >= min_visible * full_area
    return keep


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms: list[Transform] = list(transforms)

    def __call__(self, sample: DetectionSample) -> DetectionSample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample

    def __repr__(self) -> str:
        inner = ", ".join(repr(t) for t in self.transforms)
        return f"Compose([{inner}])"


class RandomScaleCrop:
    """The paper's scale jitter: random resize, then a random ``S x S`` crop (or pad).

    For a factor ``s ~ U(scale_range)`` the image is resized (aspect kept) to fit in ``s*S_h x s*S_w``,
    i.e. by ``scale = s * min(S_h / H, S_w / W)``. If the resized image is larger than the output in a
    dimension, a crop offset is drawn uniformly in that dimension; otherwise the image sits at the
    top-left and the rest is padded with ``fill``. A shrink is an INTER_AREA resize (which averages instead of
    aliasing, as inference does: :func:`effdet.data.preprocess.resize_interpolation`) followed by crop/pad; an
    enlargement is one bilinear ``warpAffine`` that resizes, crops and pads, computing only the output pixels.
    ``resize="random_filtered"`` resamples instead with Pillow's antialiased bilinear or bicubic filter (one drawn
    per image; the filter widens when shrinking), as the reference effdet's training resize does, computing only
    the part of the canvas the image covers.

    Boxes are scaled, shifted, clipped to the canvas, then **dropped** when a clipped side is shorter
    than ``min_size`` px or less than ``min_visible`` of the box's scaled area remains inside the
    canvas. Crowd regions are clipped and dropped only when degenerate (a side < ``min_size``).
    ``sample.scale`` is multiplied by the resize factor (the crop offset is not recorded).
    """

    def __init__(
        self,
        output_size: SizeLike,
        scale_range: tuple[float, float] = (0.1, 2.0),
        fill: FillLike = None,
        min_size: float = 2.0,
        min_visible: float = 0.2,
        rng: Optional[np.random.Generator] = None,
        resize: str = "area",
    ) -> None:
        low, high = (float(v) for v in scale_range)
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range!r}")
        if resize not in TRAIN_RESIZE_MODES:
            raise ValueError(f"resize must be one of {TRAIN_RESIZE_MODES}, got {resize!r}")
        self.resize = resize
        self.output_size = as_size(output_size)
        self.scale_range = (low, high)
        self.fill = _fill_value(fill)
        self.min_size = float(min_size)
        self.min_visible = float(min_visible)
        self.rng = rng

    def __repr__(self) -> str:
        return f"RandomScaleCrop(output_size={self.output_size}, scale_range={self.scale_range})"

    def __call__(self, sample: DetectionSample) -> DetectionSample:
        rng = self.rng if self.rng is not None else torch_seeded_rng()
        image = sample.image
        in_h, in_w = image.shape[:2]
        out_h, out_w = self.output_size
        jitter = rng.uniform(*self.scale_range)
        scale = jitter * min(out_h / in_h, out_w / in_w)
        scaled_h, scaled_w = in_h * scale, in_w * scale
        offset_y = float(rng.integers(0, int(scaled_h - out_h) + 1)) if scaled_h > out_h else 0.0
        offset_x = float(rng.integers(0, int(scaled_w - out_w) + 1)) if scaled_w > out_w else 0.0

        if self.resize == "random_filtered":
            canvas = self._filtered_resize_crop(image, scale, offset_x, offset_y, int(rng.integers(0, 2)))
        else:
            canvas = self._resize_crop(image, scale, offset_x, offset_y)

        shift = np.array([offset_x, offset_y, offset_x, offset_y], dtype=np.float32)
        limits = np.array([out_w, out_h, out_w, out_h], dtype=np.float32)
        boxes = sample.boxes.astype(np.float32, copy=False) * np.float32(scale) - shift
        full_area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        boxes = np.clip(boxes, 0, limits)
        keep = visible_boxes_mask(boxes, full_area, self.min_size, self.min_visible)
        crowd = sample.crowd_boxes.astype(np.float32, copy=False) * np.float32(scale) - shift
        crowd = np.clip(crowd, 0, limits)
        crowd_keep = visible_boxes_mask(crowd, np.zeros(len(crowd), np.float32), self.min_size, 0.0)
        return replace(
            sample,
            image=canvas,
            boxes=boxes[keep],
            labels=sample.labels[keep],
            crowd_boxes=crowd[crowd_keep],
            scale=sample.scale * float(scale),
        )

    def _filtered_resize_crop(self, image: np.ndarray, scale: float, offset_x: float, offset_y: float,
                              choice: int) -> np.ndarray:
        """Pillow's antialiased resampling (``choice`` 0: bilinear, 1: bicubic) of the source region the canvas shows;
        the same geometry as :meth:`_resize_crop`: output pixel ``u`` covers source ``[(u + ox) / s, (u + 1 + ox) / s]``."""
        out_h, out_w = self.output_size
        in_h, in_w = image.shape[:2]
        canvas = np.empty((out_h, out_w, *image.shape[2:]), dtype=image.dtype)
        canvas[...] = self.fill if image.ndim == 3 else self.fill[0]
        width = min(out_w, int(round(in_w * scale - offset_x)))
        height = min(out_h, int(round(in_h * scale - offset_y)))
        if width < 1 or height < 1:
            return canvas
        # the covered source region, clamped: rounding the covered size up may reach past the last source pixel
        box = (offset_x / scale, offset_y / scale, min(in_w, (offset_x + width) / scale),
               min(in_h, (offset_y + height) / scale))
        method = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)[choice]
        canvas[:height, :width] = np.asarray(Image.fromarray(image).resize((width, height), method, box=box))
        return canvas

    def _resize_crop(self, image: np.ndarray, scale: float, offset_x: float, offset_y: float) -> np.ndarray:
        """Output pixel (u, v) shows continuous source point ((u + ox) / scale, (v + oy) / scale)."""
        out_h, out_w = self.output_size
        if scale < AREA_INTERPOLATION_BELOW:
            # Shrink: average source pixels (INTER_AREA, no aliasing), then crop/pad. Rounding the
            # resized size to whole pixels misplaces content by at most half an output pixel.
            in_h, in_w = image.shape[:2]
            resized = cv2.resize(
                image,
                (max(1, int(round(in_w * scale))), max(1, int(round(in_h * scale)))),
                interpolation=cv2.INTER_AREA,
            )
            top, left = int(offset_y), int(offset_x)
            window = resized[top : top + out_h, left : left + out_w]
            return cv2.copyMakeBorder(
                window,
                0,
                out_h - window.shape[0],
                0,
                out_w - window.shape[1],
                cv2.BORDER_CONSTANT,
                value=self.fill,
            )
        # One warpAffine resizes, crops and pads, computing only the output pixels. OpenCV puts pixel
        # centres at integer coordinates; the half-pixel terms make continuous coordinates map exactly:
        # x_out = scale * x_src - offset.
        matrix = np.array(
            [
                [scale, 0.0, 0.5 * scale - 0.5 - offset_x],
                [0.0, scale, 0.5 * scale - 0.5 - offset_y],
            ],
            dtype=np.float64,
        )
        return cv2.warpAffine(
            image,
            matrix,
            (out_w, out_h),
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=self.fill,
        )


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``: ``x1, x2 -> W - x2, W - x1``."""

    def __init__(self, p: float = 0.5, rng: Optional[np.random.Generator] = None) -> None:
        self.p = float(p)
        self.rng = rng

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"

    def __call__(self, sample: DetectionSample) -> DetectionSample:
        rng = self.rng if self.rng is not None else torch_seeded_rng()
        if rng.random() >= self.p:
            return sample
        width = sample.image.shape[1]
        return replace(
            sample,
            image=cv2.flip(sample.image, 1),
            boxes=flip_boxes_horizontal(sample.boxes, width),
            crowd_boxes=flip_boxes_horizontal(sample.crowd_boxes, width),
        )


class Letterbox:
    """Deterministic resize-and-pad for validation/inference (see :func:`effdet.data.preprocess.letterbox`).

    Boxes become ``box * scale`` (top-left placement, no shift); ``sample.scale`` is multiplied by it.
    """

    def __init__(self, output_size: SizeLike, fill: FillLike = None) -> None:
        self.output_size = as_size(output_size)
        self.fill = _fill_value(fill)

    def __repr__(self) -> str:
        return f"Letterbox(output_size={self.output_size})"

    def __call__(self, sample: DetectionSample) -> DetectionSample:
        canvas, scale = letterbox(sample.image, self.output_size, self.fill)
        factor = np.float32(scale)
        return replace(
            sample,
            image=canvas,
            boxes=sample.boxes.astype(np.float32, copy=False) * factor,
            crowd_boxes=sample.crowd_boxes.astype(np.float32, copy=False) * factor,
            scale=sample.scale * scale,
        )


class ToTensor:
    """Final step: image -> contiguous uint8 tensor ``[3, H, W]``; boxes/labels -> tensors."""

    def __repr__(self) -> str:
        return "ToTensor()"

    def __call__(self, sample: DetectionSample) -> DetectionSample:
        return replace(
            sample,
            image=image_to_tensor(sample.image),
            boxes=torch.from_numpy(np.ascontiguousarray(sample.boxes, dtype=np.float32)),
            labels=torch.from_numpy(np.ascontiguousarray(sample.labels, dtype=np.int64)),
            crowd_boxes=torch.from_numpy(np.ascontiguousarray(sample.crowd_boxes, dtype=np.float32)),
        )


def train_transforms(
    image_size: SizeLike,
    scale_range: tuple[float, float] = (0.1, 2.0),
    fill: FillLike = None,
    flip_probability: float = 0.5,
    min_visible: float = 0.2,
    resize: str = "area",
) -> Compose:
    """Scale jitter + random crop (keeping boxes with ``min_visible`` of their area; resampling ``resize``, see
    :class:`RandomScaleCrop`), horizontal flip, to uint8 tensor ``[3, S, S]``."""
    return Compose(
        [
            RandomScaleCrop(image_size, scale_range=scale_range, fill=fill, min_visible=min_visible, resize=resize),
            RandomHorizontalFlip(flip_probability),
            ToTensor(),
        ]
    )


def eval_transforms(image_size: SizeLike, fill: FillLike = None) -> Compose:
    """Letterbox to ``S x S`` (top-left), to uint8 tensor ``[3, S, S]``."""
    return Compose([Letterbox(image_size, fill=fill), ToTensor()])
