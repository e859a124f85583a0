"""From raw head outputs to detections: top-k, decode, clip, NMS / soft-NMS, undo letterbox, flip TTA.

Detections are dicts ``{"boxes": [K, 4] xyxy float, "scores": [K] float, "labels": [K] int64 (0..C-1)}``.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torchvision.ops import batched_nms

from .box_coder import BoxCoder
from .boxes import clip_boxes, paired_iou
from ..choices import NMS_METHODS
from ..types import Detections

ImageSize = Tuple[float, float]


def _anchors_per_location(
    class_outputs: Sequence[torch.Tensor], box_outputs: Sequence[torch.Tensor]
) -> Tuple[int, int]:
    """(A, C) from the channel counts ``A*4`` of the box head and ``A*C`` of the class head."""
    num_anchors = box_outputs[0].shape[1] // 4
    num_classes = class_outputs[0].shape[1] // num_anchors
    if num_anchors * 4 != box_outputs[0].shape[1] or num_anchors * num_classes != class_outputs[0].shape[1]:
        raise ValueError(
            f"channel counts {class_outputs[0].shape[1]} (class) and {box_outputs[0].shape[1]} (box) "
            "are not A*C and A*4"
        )
    return num_anchors, num_classes


def _max_logit_per_anchor(class_outputs: Sequence[torch.Tensor], num_anchors: int, num_classes: int) -> torch.Tensor:
    """``[B, N]``: the largest class logit of every anchor, in anchor order (level -> y -> x -> anchor)."""
    per_level = []
    for logits in class_outputs:
        batch, _, height, width = logits.shape
        level_max = logits.view(batch, num_anchors, num_classes, height, width).amax(dim=2)  # [B, A, H, W]
        per_level.append(level_max.permute(0, 2, 3, 1).reshape(batch, -1))
    return torch.cat(per_level, dim=1)


def _class_rows(
    class_outputs: Sequence[torch.Tensor], batch_idx: torch.Tensor, anchor_idx: torch.Tensor, num_anchors: int,
    num_classes: int,
) -> torch.Tensor:
    """``[K, C]`` class logits of anchors ``anchor_idx`` (flat anchor order) of images ``batch_idx``."""
    rows = class_outputs[0].new_empty((anchor_idx.numel(), num_classes))
    offset = 0
    for logits in class_outputs:
        batch, _, height, width = logits.shape
        count = height * width * num_anchors
        in_level = (anchor_idx >= offset) & (anchor_idx < offset + count)
        if bool(in_level.any()):
            local = anchor_idx[in_level] - offset
            anchor = local % num_anchors
            position = local // num_anchors
            y, x = position // width, position % width
            grid = logits.view(batch, num_anchors, num_classes, height, width)
            rows[in_level] = grid[batch_idx[in_level], anchor, :, y, x]
        offset += count
    return rows


def topk_logits(
    class_outputs: Sequence[torch.Tensor],
    num_classes: int,
    k: int,
    min_logit: float = -math.inf,
) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Exact top-k over all anchor x class logits of each image, without a top-k over all of them.

    Equal (ties aside) to ``torch.topk(flatten_outputs(...)[0].reshape(B, -1), k)`` restricted to
    logits ``>= min_logit``. Let ``t`` be the k-th largest per-anchor maximum: the k anchors with the
    largest maxima hold at least k logits ``>= t``, so every global top-k logit is ``>= t`` and lives in
    an anchor whose maximum is ``>= t``. Only those (about k) anchors' rows are gathered and searched.

    Returns, per image, ``(logits [K], flat_index [K])`` sorted by decreasing logit, ``K <= k``,
    ``flat_index = anchor * C + class``.
    """
    num_anchors = class_outputs[0].shape[1] // num_classes
    anchor_max = _max_logit_per_anchor(class_outputs, num_anchors, num_classes)  # [B, N]
    batch, total_anchors = anchor_max.shape
    if k <= 0:
        empty = torch.empty(0, device=anchor_max.device)
        return [(empty.to(anchor_max.dtype), empty.long()) for _ in range(batch)]
    if k < total_anchors:
        kth_anchor_max = anchor_max.topk(k, dim=1, sorted=False).values.amin(dim=1)  # [B]
    else:
        kth_anchor_max = torch.full((batch,), -math.inf, device=anchor_max.device, dtype=anchor_max.dtype)
    threshold = kth_anchor_max.clamp(min=min_logit)  # [B]
    batch_idx, anchor_idx = (anchor_max >= threshold[:, None]).nonzero(as_tuple=True)
    rows = _class_rows(class_outputs, batch_idx, anchor_idx, num_anchors, num_classes)  # [K', C]

    results = []
    for image in range(batch):
        in_image = batch_idx == image
        image_rows = rows[in_image]
        flat_index = (anchor_idx[in_image][:, None] * num_classes
                      + torch.arange(num_classes, device=rows.device)).reshape(-1)
        values = image_rows.reshape(-1)
        keep = values >= threshold[image]
        values, flat_index = values[keep], flat_index[keep]
        values, order = values.topk(min(k, values.numel()))
        results.append((values, flat_index[order]))
    return results


def _gather_box_codes(box_outputs: Sequence[torch.Tensor], image: int, anchor_idx: torch.Tensor) -> torch.Tensor:
    """``[K, 4]`` box codes of one image at flat anchor indices."""
    codes = torch.cat([level[image].permute(1, 2, 0).reshape(-1, 4) for level in box_outputs], dim=0)
    return codes[anchor_idx]


def soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    max_detections: int = 100,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gaussian soft-NMS (Bodla et al. 2017), independently per class.

    Per class, greedily: take the highest remaining score; every other remaining box of that class is
    rescored by ``exp(-IoU**2 / sigma)`` (the paper's Gaussian penalty; sigma 0.5 in the paper and the
    reference); boxes whose score falls to ``<= score_threshold`` are dropped. The result is the best
    ``max_detections`` selections over all classes by rescored score, as running the reference's
    loop to the end and cutting its list.
    (TensorFlow's ``soft_nms_sigma`` means ``exp(-IoU**2 / (2*sigma))``; pass ``sigma=2*s`` to mimic it.)

    Vectorised over classes: each round makes one greedy step in every class at once. Scores only
    decrease, so once ``max_detections`` selections score at least the best remaining score no later
    selection can enter the result and the loop stops.

    Args:
        boxes: ``[K, 4]`` xyxy. scores: ``[K]``. classes: ``[K]`` int.

    Returns:
        ``(indices [D] int64, rescored scores [D])`` by decreasing rescored score, ``D <= max_detections``.
    """
    device = boxes.device
    num_boxes = scores.numel()
    if num_boxes == 0 or max_detections <= 0:
        return torch.empty(0, dtype=torch.long, device=device), scores.new_empty(0)
    _, group = torch.unique(classes, return_inverse=True)  # dense class ids 0..G-1
    num_groups = int(group.max()) + 1
    current = scores.float().clone()
    current[current <= score_threshold] = -math.inf
    box_ids = torch.arange(num_boxes, device=device)
    picked_ids: List[torch.Tensor] = []
    picked_scores: List[torch.Tensor] = []
    while True:
        group_best = current.new_full((num_groups,), -math.inf).scatter_reduce(0, group, current, "amax")
        bound = group_best.max()
        if not bool(torch.isfinite(bound)):
            break
        if picked_scores and int((torch.cat(picked_scores) >= bound).sum()) >= max_detections:
            break  # every later selection scores <= bound
        # the first box holding its class's best score
        at_best = (current == group_best[group]) & torch.isfinite(current)
        first = torch.full((num_groups,), num_boxes, dtype=torch.long, device=device).scatter_reduce(
            0, group, torch.where(at_best, box_ids, num_boxes), "amin")
        chosen = first[first < num_boxes]  # [G'] one box per class that still has boxes
        picked_ids.append(chosen)
        picked_scores.append(current[chosen].clone())
        current[chosen] = -math.inf
        # rescore every remaining box by its IoU with the box just chosen in its class
        chosen_box_of_group = boxes.new_zeros((num_groups, 4))
        chosen_box_of_group[group[chosen]] = boxes[chosen]
        has_choice = torch.zeros(num_groups, dtype=torch.bool, device=device)
        has_choice[group[chosen]] = True
        iou = paired_iou(boxes, chosen_box_of_group[group])
        decay = torch.where(has_choice[group], torch.exp(-(iou * iou) / sigma), torch.ones_like(iou))
        current = current * decay
        current[current <= score_threshold] = -math.inf
    ids = torch.cat(picked_ids) if picked_ids else torch.empty(0, dtype=torch.long, device=device)
    rescored = torch.cat(picked_scores) if picked_scores else scores.new_empty(0).float()
    order = torch.sort(rescored, descending=True, stable=True).indices[:max_detections]
    return ids[order], rescored[order].to(scores.dtype)


def _hard_nms_top(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, iou_threshold: float, max_detections: int
) -> torch.Tensor:
    """First ``max_detections`` indices kept by per-class greedy NMS, by decreasing score.

    Greedy NMS decides about a box from higher-scored boxes only, so NMS over the best ``m`` boxes keeps
    exactly the kept boxes among them; if that is already ``max_detections`` boxes, the rest cannot
    change the answer. Tries the best ``10 * max_detections`` boxes first, then all.
    """
    prefix = 10 * max_detections
    if scores.numel() > prefix:
        best = scores.topk(prefix).indices
        keep = batched_nms(boxes[best], scores[best], classes[best], iou_threshold)
        if keep.numel() >= max_detections:
            return best[keep[:max_detections]]
    return batched_nms(boxes, scores, classes, iou_threshold)[:max_detections]


def _suppress(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    method: str,
    iou_threshold: float,
    soft_nms_sigma: float,
    score_threshold: float,
    max_detections: int,
) -> Detections:
    """Per-class hard NMS (``batched_nms``) or Gaussian soft-NMS, keeping ``max_detections``."""
    if method == "hard":
        keep = _hard_nms_top(boxes, scores, classes, iou_threshold, max_detections)
        kept_scores = scores[keep]
    elif method == "soft":
        keep, kept_scores = soft_nms(boxes, scores, classes, soft_nms_sigma, score_threshold, max_detections)
    else:
        raise ValueError(f"nms method must be one of {list(NMS_METHODS)}, got {method!r}")
    return {"boxes": boxes[keep], "scores": kept_scores, "labels": classes[keep].long()}


def postprocess(
    class_outputs: Sequence[torch.Tensor],
    box_outputs: Sequence[torch.Tensor],
    anchors: torch.Tensor,
    *,
    score_threshold: float = 0.001,
    pre_nms_top_k: int = 5000,
    nms_method: str = "hard",
    iou_threshold: float = 0.5,
    soft_nms_sigma: float = 0.5,
    max_detections: int = 100,
    image_sizes: Optional[Sequence[ImageSize]] = None,
) -> List[Detections]:
    """Raw head outputs -> detections per image, in network-input pixels.

    Same steps as the reference ``DetBenchPredict``: top ``pre_nms_top_k`` logits over all
    anchors x classes (exact, see ``topk_logits``), decode their anchors' box codes, clip to the
    image, sigmoid, per-class NMS at ``iou_threshold`` (``nms_method='hard'``, torchvision
    ``batched_nms``) or Gaussian soft-NMS (``'soft'``), keep the best ``max_detections``.
    Candidates with a score below ``score_threshold`` are dropped before top-k (the reference keeps
    them; pass 0 for identical results).

    Args:
        class_outputs: per level ``[B, A*C, H_l, W_l]`` logits; box_outputs: per level ``[B, A*4, H_l, W_l]``.
        anchors: ``[N, 4]`` xyxy from ``generate_anchors`` for the same input size.
        image_sizes: optional per image ``(h, w)`` of the valid (non-padding) image area in network
            pixels, i.e. ``original size * letterbox scale``; boxes are clipped to it. Without it
            boxes are not clipped (as the reference without ``img_info``).

    Returns:
        per image ``{"boxes": [K, 4] xyxy, "scores": [K], "labels": [K] int64 in 0..C-1}``, by decreasing score.
    """
    num_anchors, num_classes = _anchors_per_location(class_outputs, box_outputs)
    if image_sizes is not None and len(image_sizes) != class_outputs[0].shape[0]:
        raise ValueError(f"got {len(image_sizes)} image sizes for a batch of {class_outputs[0].shape[0]}")
    min_logit = -math.inf
    if score_threshold > 0:
        min_logit = math.log(score_threshold / (1.0 - score_threshold)) if score_threshold < 1 else math.inf
    coder = BoxCoder()
    detections = []
    for image, (logits, flat_index) in enumerate(topk_logits(class_outputs, num_classes, pre_nms_top_k, min_logit)):
        anchor_idx = torch.div(flat_index, num_classes, rounding_mode="floor")
        classes = flat_index % num_classes
        codes = _gather_box_codes(box_outputs, image, anchor_idx).float()
        boxes = coder.decode(codes, anchors[anchor_idx])
        if image_sizes is not None:
            boxes = clip_boxes(boxes, float(image_sizes[image][0]), float(image_sizes[image][1]))
        scores = logits.float().sigmoid()
        detections.append(
            _suppress(boxes, scores, classes, nms_method, iou_threshold, soft_nms_sigma, score_threshold,
                      max_detections)
        )
    return detections


def scale_boxes_to_original(boxes: torch.Tensor, scale: float, orig_size: Tuple[int, int]) -> torch.Tensor:
    """Network-input xyxy boxes ``[K, 4]`` -> original-image pixels.

    Images are letterboxed at the top-left corner (resized by ``scale``, padded right/bottom), so this
    only divides by ``scale`` and clips to the original ``(h, w)``.
    """
    return clip_boxes(boxes / scale, float(orig_size[0]), float(orig_size[1]))


def merge_detections(
    detections: Sequence[Detections],
    iou_threshold: float = 0.5,
    method: str = "hard",
    max_detections: int = 100,
    soft_nms_sigma: float = 0.5,
    score_threshold: float = 0.001,
) -> Detections:
    """Merge detections of one image from several test-time views (e.g. original + un-flipped).

    Concatenates all views (boxes already in the same frame) and runs per-class NMS on the union:
    ``method='hard'`` (``batched_nms`` at ``iou_threshold``) or ``'soft'`` (Gaussian soft-NMS).
    No weighted box fusion. Keeps the best ``max_detections``.
    """
    if not detections:
        raise ValueError("merge_detections needs at least one set of detections")
    boxes = torch.cat([d["boxes"] for d in detections])
    scores = torch.cat([d["scores"] for d in detections])
    labels = torch.cat([d["labels"] for d in detections]).long()
    return _suppress(boxes, scores, labels, method, iou_threshold, soft_nms_sigma, score_threshold, max_detections)
