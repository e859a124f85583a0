"""From uint8 image batches to detections in original-image pixels: the step that validation,
``tools/eval.py`` and the Predictor share (normalise → network → decode/NMS → undo the letterbox)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .anchors import anchors_for
from .variants import ModelConfig
from ..ops.boxes import flip_boxes_horizontal
from ..ops.nms import merge_detections, postprocess, scale_boxes_to_original
from .postprocess_settings import PostprocessSettings
from ..data.preprocess import normalize
from ..types import Detections

__all__ = ["detect_batch", "valid_image_sizes"]


def _decode(model: nn.Module, inputs: torch.Tensor, valid_sizes: list[tuple[float, float]],
            settings: PostprocessSettings) -> list[Detections]:
    class_outputs, box_outputs = model(inputs)
    anchors = anchors_for(model.config, inputs.shape[-2:], inputs.device)
    return postprocess(
        class_outputs, box_outputs, anchors,
        score_threshold=settings.score_threshold, pre_nms_top_k=settings.pre_nms_top_k,
        nms_method=settings.nms, iou_threshold=settings.iou_threshold, soft_nms_sigma=settings.soft_nms_sigma,
        max_detections=settings.max_detections, image_sizes=valid_sizes)


def valid_image_sizes(orig_sizes: Sequence[tuple[int, int]], scales: Sequence[float],
                      canvas: Sequence[int]) -> list[tuple[float, float]]:
    """(h, w) of each letterboxed image's non-padding area in network pixels: ``original size × scale``."""
    return [(min(h * s, canvas[0]), min(w * s, canvas[1])) for (h, w), s in zip(orig_sizes, scales)]


@torch.no_grad()
def detect_batch(
    model: nn.Module,
    images: torch.Tensor,
    scales: torch.Tensor,
    orig_sizes: torch.Tensor,
    settings: PostprocessSettings | None = None,
) -> list[Detections]:
    """Run ``model`` (an :class:`~effdet.modeling.model.EfficientDet`, in eval mode) on letterboxed images.

    Args:
        images: uint8 (or float 0..255) [B, 3, H, W] RGB, letterboxed at the top-left.
        scales: [B] letterbox scale (network pixels per original pixel).
        orig_sizes: [B, 2] original (height, width).
    Returns:
        per image ``{"boxes": [K, 4] xyxy in original pixels, "scores": [K], "labels": [K] int64 0..C-1}``.
    """
    settings = settings or PostprocessSettings()
    config: ModelConfig = model.config
    inputs = normalize(images, config.mean, config.std)
    scale_list = [float(s) for s in scales]
    sizes = [(int(h), int(w)) for h, w in orig_sizes.tolist()]
    valid = valid_image_sizes(sizes, scale_list, inputs.shape[-2:])
    detections = _decode(model, inputs, valid, settings)
    if settings.hflip_tta:
        # The mirrored canvas holds the image at the right, so its boxes are clipped to the canvas here,
        # un-flipped within the canvas width, and clipped to the original image below.
        canvas = [tuple(inputs.shape[-2:])] * inputs.shape[0]
        flipped = _decode(model, inputs.flip(-1), canvas, settings)
        merged = []
        for det, det_flip in zip(detections, flipped):
            det_flip = dict(det_flip, boxes=flip_boxes_horizontal(det_flip["boxes"], inputs.shape[-1]))
            merged.append(merge_detections(
                [det, det_flip], iou_threshold=settings.iou_threshold, method=settings.nms,
                max_detections=settings.max_detections, soft_nms_sigma=settings.soft_nms_sigma,
                score_threshold=settings.score_threshold))
        detections = merged
    return [
        dict(det, boxes=scale_boxes_to_original(det["boxes"], s, size))
        for det, s, size in zip(detections, scale_list, sizes)
    ]
