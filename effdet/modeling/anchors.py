"""Anchor grid (and the anchors of a network input size, :func:`anchors_for`) and flattening of the raw head
outputs. Box coding against the anchors: :mod:`effdet.ops.box_coder`.

Conventions (shared by assignment, loss and post-processing):

* Boxes and anchors are ``xyxy`` in absolute network-input pixels.
* Anchors are ordered level -> y -> x -> anchor, where the anchor index at one location runs over
  octave scales (outer loop) and aspect ratios (inner loop). With the default 3 scales and 3 aspect
  ratios there are 9 anchors per location; EfficientDet-D0 at 512x512 has 49,104 anchors.
* Feature sizes halve with ceiling division from the input size, so the stride of a level is
  ``input_size / feature_size`` (exactly ``2**level`` when the input is divisible by it).
* Box regression codes are ``(ty, tx, th, tw)`` relative to the anchor, without scale factors.
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Optional, Sequence, Union

import torch

from .._moved import lazy_exports

if TYPE_CHECKING:
    from .variants import ModelConfig

AspectRatio = Union[float, tuple[float, float]]

DEFAULT_ASPECT_RATIOS: tuple[tuple[float, float], ...] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))


def feature_sizes(image_size: tuple[int, int], min_level: int, max_level: int) -> list[tuple[int, int]]:
    """Feature map sizes ``(h, w)`` of levels ``min_level..max_level`` for an input of ``image_size`` (h, w).

    Each level halves the previous one with ceiling division, starting from the input (level 0):
    512 -> 64, 32, 16, 8, 4 for P3..P7; 320 -> 40, 20, 10, 5, 3.
    """
    if min_level < 0 or max_level < min_level:
        raise ValueError(f"need 0 <= min_level <= max_level, got min_level={min_level}, max_level={max_level}")
    height, width = int(image_size[0]), int(image_size[1])
    sizes = []
    for level in range(max_level + 1):
        if level >= min_level:
            sizes.append((height, width))
        height, width = -(-height // 2), -(-width // 2)
    return sizes


def num_anchors_per_location(num_scales: int = 3, aspect_ratios: Sequence[AspectRatio] = DEFAULT_ASPECT_RATIOS) -> int:
    """Number of anchors at each feature-map location (A = num_scales * len(aspect_ratios))."""
    return num_scales * len(aspect_ratios)


def _aspect_multipliers(aspect: AspectRatio) -> tuple[float, float]:
    """(x, y) size multipliers of an aspect ratio given as a pair or as a single w/h ratio."""
    if isinstance(aspect, (tuple, list)):
        if len(aspect) != 2:
            raise ValueError(f"aspect ratio pairs must be (x, y) multipliers, got {aspect!r}")
        return float(aspect[0]), float(aspect[1])
    ratio_sqrt = math.sqrt(float(aspect))
    return ratio_sqrt, 1.0 / ratio_sqrt


@functools.lru_cache(maxsize=32)
def _cached_anchors(
    image_size: tuple[int, int],
    min_level: int,
    max_level: int,
    num_scales: int,
    aspect_ratios: tuple[tuple[float, float], ...],
    anchor_scales: tuple[float, ...],
    device: torch.device,
    dtype: torch.dtype,
) -> torch.Tensor:
    # Built in float64 and rounded once at the end, so the values are those of the reference grid.
    levels = []
    sizes = feature_sizes(image_size, min_level, max_level)
    for level_index, (feat_h, feat_w) in enumerate(sizes):
        stride_y = image_size[0] / feat_h
        stride_x = image_size[1] / feat_w
        centre_y = torch.arange(feat_h, dtype=torch.float64) * stride_y + stride_y / 2
        centre_x = torch.arange(feat_w, dtype=torch.float64) * stride_x + stride_x / 2
        grid_y, grid_x = torch.meshgrid(centre_y, centre_x, indexing="ij")  # [H, W] each

        half_sizes = []  # [(half_w, half_h)] in anchor order: octave scale outer, aspect inner
        for octave in range(num_scales):
            octave_factor = 2 ** (octave / float(num_scales))
            base_w = anchor_scales[level_index] * stride_x * octave_factor
            base_h = anchor_scales[level_index] * stride_y * octave_factor
            for aspect_x, aspect_y in aspect_ratios:
                half_sizes.append((base_w * aspect_x / 2.0, base_h * aspect_y / 2.0))
        half = torch.tensor(half_sizes, dtype=torch.float64)  # [A, 2]

        cx = grid_x.reshape(-1, 1)  # [H*W, 1]
        cy = grid_y.reshape(-1, 1)
        boxes = torch.stack(
            [cx - half[:, 0], cy - half[:, 1], cx + half[:, 0], cy + half[:, 1]], dim=-1
        )  # [H*W, A, 4]
        levels.append(boxes.reshape(-1, 4))
    return torch.cat(levels, dim=0).to(device=device, dtype=dtype)


def generate_anchors(
    image_size: Union[int, tuple[int, int]],
    min_level: int = 3,
    max_level: int = 7,
    num_scales: int = 3,
    aspect_ratios: Sequence[AspectRatio] = DEFAULT_ASPECT_RATIOS,
    anchor_scale: Union[float, Sequence[float]] = 4.0,
    device: Optional[Union[str, torch.device]] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """All anchors of the pyramid as a ``[N, 4]`` xyxy tensor in input pixels.

    Args:
        image_size: network input size ``(h, w)`` (or one int for a square input).
        min_level, max_level: pyramid levels (P3..P7 by default).
        num_scales: octave scales per location, ``2**(i / num_scales)`` for ``i < num_scales``.
        aspect_ratios: ``(x, y)`` size multipliers, or single ``w/h`` ratios.
        anchor_scale: base anchor size in strides; one value or one per level.
        device, dtype: where the returned tensor lives.

    Order: level -> y -> x -> anchor (octave scale outer, aspect inner). Anchor ``(scale s, aspect
    (ax, ay))`` at level ``l`` has width ``anchor_scale * stride_x * 2**(s/num_scales) * ax`` and is
    centred at ``(stride_x / 2 + i * stride_x, stride_y / 2 + j * stride_y)``.
    The result is cached per configuration, device and dtype: treat it as read-only.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    num_levels = max_level - min_level + 1
    if isinstance(anchor_scale, (int, float)):
        scales = (float(anchor_scale),) * num_levels
    else:
        scales = tuple(float(s) for s in anchor_scale)
        if len(scales) != num_levels:
            raise ValueError(f"anchor_scale needs one value per level ({num_levels}), got {len(scales)}")
    aspects = tuple(_aspect_multipliers(a) for a in aspect_ratios)
    return _cached_anchors(
        (int(image_size[0]), int(image_size[1])),
        int(min_level),
        int(max_level),
        int(num_scales),
        aspects,
        scales,
        torch.device(device if device is not None else "cpu"),
        dtype,
    )


def smallest_anchor_side(min_level: int, anchor_scale: float) -> float:
    """Side of the smallest anchor of the pyramid (input pixels; the square-equivalent ``sqrt(w*h)``, which the aspect
    ratios keep): ``anchor_scale * 2**min_level`` (octave scale 0 at the finest level)."""
    return float(anchor_scale) * 2 ** int(min_level)


def smallest_matchable_side(anchor_side: float) -> float:
    """The smallest object side ``sqrt(w*h)`` (input pixels) that can reach IoU 0.5, the matcher's threshold
    (``loss.match_threshold``'s default), with an anchor of side ``anchor_side``: centred on it their IoU is
    ``(side / anchor_side)**2``, so ``anchor_side / sqrt(2)``. A smaller object is never a positive of any anchor."""
    return float(anchor_side) / math.sqrt(2.0)


def anchor_size_range(image_size: Sequence[int], min_level: int, max_level: int, num_scales: int,
                      anchor_scale: float) -> tuple[float, float]:
    """Square-equivalent side of the smallest and the largest anchor (input pixels); ``image_size`` does not change
    them (kept for the callers' argument order)."""
    largest = float(anchor_scale) * 2 ** int(max_level) * 2 ** ((num_scales - 1) / num_scales)
    return smallest_anchor_side(min_level, anchor_scale), largest


def flatten_outputs(
    class_outputs: Sequence[torch.Tensor], box_outputs: Sequence[torch.Tensor], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate per-level head outputs in anchor order.

    Args:
        class_outputs: per level ``[B, A*C, H_l, W_l]`` logits, channel ``a*C + c``.
        box_outputs: per level ``[B, A*4, H_l, W_l]`` codes, channel ``a*4 + k``.
        num_classes: C.

    Returns:
        ``cls [B, N, C]`` and ``box [B, N, 4]`` with N = sum_l H_l*W_l*A, ordered level -> y -> x -> anchor.
    """
    if len(class_outputs) != len(box_outputs):
        raise ValueError(f"got {len(class_outputs)} class levels but {len(box_outputs)} box levels")
    batch = class_outputs[0].shape[0]
    cls = torch.cat([level.permute(0, 2, 3, 1).reshape(batch, -1, num_classes) for level in class_outputs], dim=1)
    box = torch.cat([level.permute(0, 2, 3, 1).reshape(batch, -1, 4) for level in box_outputs], dim=1)
    return cls, box


def anchors_for(config: ModelConfig, image_size: Sequence[int], device: torch.device) -> torch.Tensor:
    """Anchors [N, 4] xyxy for a network input of ``image_size`` (h, w) under ``config``."""
    return generate_anchors(
        (int(image_size[0]), int(image_size[1])), config.min_level, config.max_level, config.num_scales,
        [tuple(r) for r in config.aspect_ratios], config.anchor_scale, device=device)


__getattr__, _ = lazy_exports(__name__)  # the box coder's names, which this module had (effdet._moved): they warn
