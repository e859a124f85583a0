"""Every box operation of the package, in one place.

Boxes are ``[..., 4]`` tensors (or numpy arrays where noted) in absolute pixel ``xyxy``
(``x1, y1, x2, y2``) unless a name says otherwise; COCO ``xywh`` (``x, y, width, height``) exists only
at the JSON edge. ``torchvision.ops`` does the work where it already has the operation.
"""
from __future__ import annotations

from typing import TypeVar, Union

import numpy as np
import torch
from torchvision.ops import box_convert, clip_boxes_to_image

Boxes = TypeVar("Boxes", torch.Tensor, np.ndarray)


def pairwise_iou(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """IoU of xyxy ``boxes [M, 4]`` with xyxy ``anchors [N, 4]`` -> ``[M, N]``.

    Same arithmetic as ``torchvision.ops.box_iou`` (bit-identical results, tested) but built from
    ``[M, N]`` planes over contiguous anchor coordinates instead of ``[M, N, 2]`` corner tensors,
    which makes it about 4x faster for the 49k anchors of D0.
    """
    ax1, ay1, ax2, ay2 = anchors.t().contiguous()  # each [N]
    bx1, by1, bx2, by2 = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3], boxes[:, 3:4]  # each [M, 1]
    inter_w = torch.min(bx2, ax2).sub_(torch.max(bx1, ax1)).clamp_(min=0)
    inter_h = torch.min(by2, ay2).sub_(torch.max(by1, ay1)).clamp_(min=0)
    inter = inter_w.mul_(inter_h)
    union = ((bx2 - bx1) * (by2 - by1) + (ax2 - ax1) * (ay2 - ay1)).sub_(inter)
    return inter.div_(union)


def pairwise_ioa(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Intersection over the FIRST box's area, ``|first ∩ second| / |first|``, for xyxy ``first [N, 4]`` and
    ``second [K, 4]`` -> ``[N, K]``. A zero-area ``first`` box gives 0."""
    top_left = torch.max(first[:, None, :2], second[None, :, :2])
    bottom_right = torch.min(first[:, None, 2:], second[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    area = ((first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1]))[:, None]
    return torch.where(area > 0, inter / area.clamp(min=torch.finfo(inter.dtype).tiny), torch.zeros_like(inter))


def paired_iou(boxes: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """IoU of ``boxes[i]`` with ``others[i]`` (xyxy ``[K, 4]`` each) -> ``[K]``; 0 where the union is empty.

    Same arithmetic as ``torchvision.ops.box_iou`` with ``others`` as the first argument.
    """
    width_height = (torch.min(boxes[:, 2:], others[:, 2:]) - torch.max(boxes[:, :2], others[:, :2])).clamp(min=0)
    inter = width_height[:, 0] * width_height[:, 1]
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    other_area = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    union = other_area + area - inter
    return torch.where(union > 0, inter / union, torch.zeros_like(inter))


def giou_loss(pred_xyxy: torch.Tensor, target_xyxy: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Element-wise ``1 - GIoU`` of matching xyxy boxes ``[..., 4]`` -> ``[...]``.

    The arithmetic of ``torchvision.ops.generalized_box_iou_loss`` (same ``eps``), with the intersection kept by
    ``torch.where`` instead of boolean-mask indexing, so that no shape depends on the data (no host sync).
    """
    x1, y1, x2, y2 = pred_xyxy.unbind(dim=-1)
    x1g, y1g, x2g, y2g = target_xyxy.unbind(dim=-1)
    inter_x1, inter_y1 = torch.max(x1, x1g), torch.max(y1, y1g)
    inter_x2, inter_y2 = torch.min(x2, x2g), torch.min(y2, y2g)
    overlaps = (inter_y2 > inter_y1) & (inter_x2 > inter_x1)
    inter = torch.where(overlaps, (inter_x2 - inter_x1) * (inter_y2 - inter_y1), torch.zeros_like(x1))
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
    iou = inter / (union + eps)
    enclosing = (torch.max(x2, x2g) - torch.min(x1, x1g)) * (torch.max(y2, y2g) - torch.min(y1, y1g))
    return 1 - (iou - (enclosing - union) / (enclosing + eps))


def clip_boxes(boxes: torch.Tensor, height: float, width: float) -> torch.Tensor:
    """Clamp xyxy boxes ``[K, 4]`` into ``[0, width] x [0, height]`` (``torchvision.ops.clip_boxes_to_image``)."""
    return clip_boxes_to_image(boxes, (height, width))  # type: ignore[arg-type]


def flip_boxes_horizontal(boxes: Boxes, width: float) -> Boxes:
    """Mirror xyxy boxes ``[K, 4]`` (tensor or numpy) in an image of ``width``: ``x1' = width - x2``,
    ``x2' = width - x1``. A numpy result is float32."""
    if isinstance(boxes, np.ndarray):
        flipped = boxes.astype(np.float32, copy=True)
        flipped[:, 0] = width - boxes[:, 2]
        flipped[:, 2] = width - boxes[:, 0]
        return flipped
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def scale_boxes(boxes: Boxes, scale: Union[float, tuple[float, float]]) -> Boxes:
    """Multiply xyxy boxes by ``scale`` (one factor, or ``(scale_x, scale_y)``)."""
    if isinstance(scale, (tuple, list)):
        sx, sy = scale
        factors = [sx, sy, sx, sy]
        return boxes * (boxes.new_tensor(factors) if isinstance(boxes, torch.Tensor) else np.asarray(factors, boxes.dtype))
    return boxes * scale


def xyxy_to_xywh(boxes: Boxes) -> Boxes:
    """``[x1, y1, x2, y2]`` -> COCO ``[x, y, width, height]`` (tensor or numpy ``[..., 4]``)."""
    if isinstance(boxes, torch.Tensor):
        return box_convert(boxes, "xyxy", "xywh")
    return np.concatenate([boxes[..., :2], boxes[..., 2:] - boxes[..., :2]], axis=-1)


def xywh_to_xyxy(boxes: Boxes) -> Boxes:
    """COCO ``[x, y, width, height]`` -> ``[x1, y1, x2, y2]`` (tensor or numpy ``[..., 4]``)."""
    if isinstance(boxes, torch.Tensor):
        return box_convert(boxes, "xywh", "xyxy")
    return np.concatenate([boxes[..., :2], boxes[..., :2] + boxes[..., 2:]], axis=-1)


__all__ = [
    "clip_boxes", "flip_boxes_horizontal", "giou_loss", "paired_iou", "pairwise_ioa", "pairwise_iou", "scale_boxes",
    "xywh_to_xyxy", "xyxy_to_xywh",
]
