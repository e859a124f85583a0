"""From raw head outputs to detections: top-k, decode, clip, NMS / soft-NMS, undo letterbox, flip TTA; and the
exportable hard NMS of the ONNX detection graph (:func:`non_max_suppression`: ONNX ``NonMaxSuppression`` when traced).

Detections are dicts ``{"boxes": [K, 4] xyxy float, "scores": [K] float, "labels": [K] int64 (0..C-1)}``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

from .box_coder import BoxCoder
from .boxes import clip_boxes, paired_iou
from ..choices import NMS_METHODS
from ..types import Detections

ImageSize = tuple[float, float]


def _anchors_per_location(
    class_outputs: Sequence[torch.Tensor], box_outputs: Sequence[torch.Tensor]
) -> tuple[int, int]:
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
) -> list[tuple[torch.Tensor, torch.Tensor]]:
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


def soft_nms_batched(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    max_detections: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian soft-NMS (Bodla et al. 2017), independently per class, for a batch of images at once.

    Per class, greedily: take the highest remaining score; every other remaining box of that class is
    rescored by ``exp(-IoU**2 / sigma)`` (the paper's Gaussian penalty; sigma 0.5 in the paper and the
    reference); boxes whose score falls to ``<= score_threshold`` are dropped. The result is the best
    ``max_detections`` selections over all classes by rescored score, as running the reference's loop to the
    end and cutting its list. (TensorFlow's ``soft_nms_sigma`` means ``exp(-IoU**2 / (2*sigma))``; pass
    ``sigma=2*s`` to mimic it.)

    Classes never interact and scores only decrease, so taking in every round the best remaining box of *any*
    class selects, in each class, the boxes that class's own greedy loop selects, in decreasing order of their
    final score: the first ``max_detections`` rounds are exactly the best ``max_detections`` selections. The loop
    runs that many rounds (at most the number of candidates) on every image at once and never asks the device
    whether to go on: no host sync at all.

    Args:
        boxes: ``[B, K, 4]`` xyxy. scores: ``[B, K]`` (padding: ``-inf`` or anything ``<= score_threshold``).
        classes: ``[B, K]`` int.

    Returns:
        ``(indices [B, D] int64, rescored scores [B, D])`` by decreasing rescored score, ``D = min(max_detections,
        K)``; a selection that does not exist (the image ran out of boxes) has score ``-inf`` and index 0.
    """
    batch, num_boxes = scores.shape
    rounds = max(0, min(int(max_detections), num_boxes))
    current = scores.float().masked_fill(scores <= score_threshold, -math.inf)
    picked_ids = torch.zeros((batch, rounds), dtype=torch.long, device=boxes.device)
    picked_scores = current.new_full((batch, rounds), -math.inf)
    rows = torch.arange(batch, device=boxes.device)
    for step in range(rounds):
        best_score, best = current.max(dim=1)  # [B]; the first box holding the best score
        found = torch.isfinite(best_score)
        picked_ids[:, step] = torch.where(found, best, 0)
        picked_scores[:, step] = best_score
        current[rows, best] = -math.inf
        # rescore the remaining boxes of the chosen box's class by their IoU with it
        chosen = boxes[rows, best]  # [B, 4]
        iou = paired_iou(boxes.reshape(-1, 4), chosen[:, None, :].expand_as(boxes).reshape(-1, 4)).view(batch, -1)
        same = (classes == classes[rows, best][:, None]) & found[:, None]
        current = current * torch.where(same, torch.exp(-(iou * iou) / sigma), torch.ones_like(iou))
        current = current.masked_fill(current <= score_threshold, -math.inf)
    return picked_ids, picked_scores.to(scores.dtype)


def soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    classes: torch.Tensor,
    sigma: float = 0.5,
    score_threshold: float = 0.001,
    max_detections: int = 100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`soft_nms_batched` for one image: ``boxes [K, 4]`` xyxy, ``scores [K]``, ``classes [K]`` ->
    ``(indices [D] int64, rescored scores [D])`` by decreasing rescored score, ``D <= max_detections``
    (one host sync, to cut the list to the selections that exist)."""
    if scores.numel() == 0 or max_detections <= 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device), scores.new_empty(0)
    ids, rescored = soft_nms_batched(boxes[None], scores[None], classes[None], sigma, score_threshold,
                                     max_detections)
    count = int(torch.isfinite(rescored[0]).sum())
    return ids[0, :count], rescored[0, :count]


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
) -> list[Detections]:
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
    candidates = []
    for image, (logits, flat_index) in enumerate(topk_logits(class_outputs, num_classes, pre_nms_top_k, min_logit)):
        anchor_idx = torch.div(flat_index, num_classes, rounding_mode="floor")
        classes = flat_index % num_classes
        codes = _gather_box_codes(box_outputs, image, anchor_idx).float()
        boxes = coder.decode(codes, anchors[anchor_idx])
        if image_sizes is not None:
            boxes = clip_boxes(boxes, float(image_sizes[image][0]), float(image_sizes[image][1]))
        candidates.append((boxes, logits.float().sigmoid(), classes))
    if nms_method == "soft":  # every image at once
        return _soft_nms_images(candidates, soft_nms_sigma, score_threshold, max_detections)
    return [_suppress(boxes, scores, classes, nms_method, iou_threshold, soft_nms_sigma, score_threshold,
                      max_detections) for boxes, scores, classes in candidates]


def _soft_nms_images(candidates: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], sigma: float,
                     score_threshold: float, max_detections: int) -> list[Detections]:
    """:func:`soft_nms_batched` over images with different numbers of candidates ``(boxes [K_i, 4], scores [K_i],
    classes [K_i])``, padded to the largest; one host sync for the whole batch (the number kept per image)."""
    width = max((scores.numel() for _, scores, _ in candidates), default=0)
    if width == 0 or max_detections <= 0:
        return [{"boxes": boxes[:0], "scores": scores[:0], "labels": classes[:0].long()}
                for boxes, scores, classes in candidates]
    boxes = torch.stack([F.pad(b, (0, 0, 0, width - b.shape[0])) for b, _, _ in candidates])
    scores = torch.stack([F.pad(s, (0, width - s.numel()), value=-math.inf) for _, s, _ in candidates])
    classes = torch.stack([F.pad(c, (0, width - c.numel())) for _, _, c in candidates])
    ids, rescored = soft_nms_batched(boxes, scores, classes, sigma, score_threshold, max_detections)
    counts = torch.isfinite(rescored).sum(dim=1).tolist()
    return [{"boxes": boxes[i][ids[i, :n]], "scores": rescored[i, :n], "labels": classes[i][ids[i, :n]].long()}
            for i, n in enumerate(counts)]


def scale_boxes_to_original(boxes: torch.Tensor, scale: float, orig_size: tuple[int, int]) -> torch.Tensor:
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


# ------------------------------------------------------------------------------------------ exportable NMS


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (boxes [B, K, 4], scores [B, 1, K]) -> selected [M, 3]; eager: torchvision."""

    @staticmethod
    def forward(ctx, boxes, scores, max_output, iou_threshold, score_threshold):  # noqa: D401
        from torchvision.ops import nms

        selected = []
        for image in range(boxes.shape[0]):
            image_scores = scores[image, 0]
            candidates = (image_scores > score_threshold).nonzero().flatten()
            keep = nms(boxes[image, candidates], image_scores[candidates], float(iou_threshold))[:int(max_output)]
            chosen = candidates[keep]
            selected.append(torch.stack([torch.full_like(chosen, image), torch.zeros_like(chosen), chosen], dim=1))
        return torch.cat(selected) if selected else torch.zeros((0, 3), dtype=torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_output, iou_threshold, score_threshold):
        return g.op("NonMaxSuppression", boxes, scores,
                    g.op("Constant", value_t=torch.tensor([int(max_output)], dtype=torch.int64)),
                    g.op("Constant", value_t=torch.tensor([float(iou_threshold)], dtype=torch.float32)),
                    g.op("Constant", value_t=torch.tensor([float(score_threshold)], dtype=torch.float32)),
                    center_point_box_i=0)


def non_max_suppression(boxes: torch.Tensor, scores: torch.Tensor, max_output: int, iou_threshold: float,
                         score_threshold: float) -> torch.Tensor:
    return _NonMaxSuppression.apply(boxes, scores, max_output, iou_threshold, score_threshold)
