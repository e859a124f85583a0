"""Matching anchors to ground-truth boxes (training targets)."""
from __future__ import annotations

from typing import Optional

import torch

from ..ops.box_coder import BoxCoder
from ..ops.boxes import pairwise_ioa, pairwise_iou

BACKGROUND = -1
IGNORE = -2


class AnchorMatcher:
    """Assigns each anchor a class target and a box-regression target.

    Rules (identical to the reference ``AnchorLabeler`` / official EfficientDet labeler):

    * IoU (``pairwise_iou``, equal to ``torchvision.ops.box_iou``) between every anchor and every real
      ground-truth box; each anchor takes its best box (the lowest box index on ties).
    * ``IoU >= match_threshold`` -> positive; ``IoU < unmatched_threshold`` -> background; in between ->
      ignored. The reference and the official implementation use 0.5 for both, i.e. there is **no**
      ignore band; that is the default here. ``unmatched_threshold=0.4`` gives RetinaNet's ignore band.
    * Low-quality matches are kept: every ground-truth box forces its best anchor (first index on ties)
      to be positive for it, whatever the IoU, as the reference does (``force_match_for_each_row``).
      When several boxes force the same anchor, the lowest box index wins. Unlike the reference, a box
      that overlaps no anchor at all (IoU 0 everywhere, e.g. a box outside the image) forces nothing.
    * ``labels < 0`` (padding, usually -1) never match anything.
    * Crowd regions (extension, not in the reference): an anchor that is not positive and whose
      intersection with any crowd box exceeds ``crowd_ioa_threshold`` (default 0.7) of the *anchor's*
      area is ignored.

    Outputs per image: ``cls_targets`` = class index (0..C-1) for positives, -1 for background, -2 for
    ignored anchors; ``box_targets`` = ``BoxCoder.encode(matched box, anchor)`` for positives, zeros
    elsewhere; ``num_positives`` = number of positive anchors.
    """

    def __init__(
        self,
        match_threshold: float = 0.5,
        unmatched_threshold: float = 0.5,
        crowd_ioa_threshold: float = 0.7,
        box_coder: Optional[BoxCoder] = None,
    ) -> None:
        if unmatched_threshold > match_threshold:
            raise ValueError(
                f"unmatched_threshold ({unmatched_threshold}) must be <= match_threshold ({match_threshold})"
            )
        self.match_threshold = match_threshold
        self.unmatched_threshold = unmatched_threshold
        self.crowd_ioa_threshold = crowd_ioa_threshold
        self.box_coder = box_coder if box_coder is not None else BoxCoder()

    def __call__(
        self,
        anchors: torch.Tensor,
        boxes: torch.Tensor,
        labels: torch.Tensor,
        crowd_boxes: Optional[torch.Tensor] = None,
        crowd_mask: Optional[torch.Tensor] = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Match a batch.

        Args:
            anchors: ``[N, 4]`` xyxy anchors (``generate_anchors``).
            boxes: ``[B, M, 4]`` xyxy ground-truth boxes in input pixels (rows with label < 0 are padding).
            labels: ``[B, M]`` integer classes 0..C-1, -1 for padding.
            crowd_boxes: optional ``[B, K, 4]`` xyxy crowd regions.
            crowd_mask: optional ``[B, K]`` bool, True where ``crowd_boxes`` holds a real region
                (all rows are real when omitted).

        Returns:
            ``cls_targets`` int64 ``[B, N]``, ``box_targets`` float ``[B, N, 4]``, ``num_positives`` float ``[B]``.
        """
        if boxes.dim() != 3 or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be [B, M, 4], got {tuple(boxes.shape)}")
        if labels.shape != boxes.shape[:2]:
            raise ValueError(f"labels must be [B, M] = {tuple(boxes.shape[:2])}, got {tuple(labels.shape)}")
        batch, max_boxes = labels.shape
        num_anchors = anchors.shape[0]
        device = anchors.device
        boxes = boxes.to(device=device, dtype=anchors.dtype)
        labels = labels.to(device=device, dtype=torch.long)
        valid = labels >= 0  # [B, M]

        matches = torch.full((batch, num_anchors), -1, dtype=torch.long, device=device)
        positive = torch.zeros((batch, num_anchors), dtype=torch.bool, device=device)
        ignore = torch.zeros((batch, num_anchors), dtype=torch.bool, device=device)
        if max_boxes > 0:
            iou = pairwise_iou(boxes.reshape(-1, 4), anchors).view(batch, max_boxes, num_anchors)
            iou = iou.masked_fill(~valid[..., None], -1.0)  # padding never wins
            best_iou, best_box = iou.max(dim=1)  # [B, N]; first box index on ties
            positive = best_iou >= self.match_threshold
            ignore = (best_iou >= self.unmatched_threshold) & ~positive
            matches = torch.where(positive, best_box, matches)

            # Each real box forces its best anchor positive (lowest box index wins a shared anchor).
            box_best_iou, box_best_anchor = iou.max(dim=2)  # [B, M]
            forcing = valid & (box_best_iou > 0)
            box_index = torch.arange(max_boxes, device=device).expand(batch, max_boxes)
            forced_box = torch.full((batch, num_anchors), max_boxes, dtype=torch.long, device=device)
            forced_box.scatter_reduce_(
                1, box_best_anchor, torch.where(forcing, box_index, max_boxes), reduce="amin"
            )
            is_forced = forced_box < max_boxes
            matches = torch.where(is_forced, forced_box, matches)
            positive = positive | is_forced
            ignore = ignore & ~is_forced

        if crowd_boxes is not None and crowd_boxes.shape[1] > 0:
            ignore = ignore | (self._inside_crowd(anchors, crowd_boxes, crowd_mask) & ~positive)

        # Targets of every anchor at once, kept where positive: no data-dependent shapes, so no host sync.
        cls_targets = torch.full((batch, num_anchors), BACKGROUND, dtype=torch.long, device=device)
        cls_targets = cls_targets.masked_fill(ignore, IGNORE)
        box_targets = torch.zeros((batch, num_anchors, 4), dtype=anchors.dtype, device=device)
        if max_boxes > 0:
            matched = matches.clamp(min=0)  # [B, N]; anchors without a match read box 0, then are discarded
            cls_targets = torch.where(positive, labels.gather(1, matched), cls_targets)
            matched_boxes = boxes.gather(1, matched[..., None].expand(batch, num_anchors, 4))  # [B, N, 4]
            codes = self.box_coder.encode(matched_boxes, anchors[None]).to(anchors.dtype)
            box_targets = torch.where(positive[..., None], codes, box_targets)
        num_positives = positive.sum(dim=1).to(anchors.dtype)
        return cls_targets, box_targets, num_positives

    def _inside_crowd(
        self, anchors: torch.Tensor, crowd_boxes: torch.Tensor, crowd_mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """``[B, N]`` bool: anchor covered by a crowd region for more than ``crowd_ioa_threshold`` of its area."""
        batch, num_crowd = crowd_boxes.shape[:2]
        crowd_boxes = crowd_boxes.to(device=anchors.device, dtype=anchors.dtype)
        ioa = pairwise_ioa(anchors, crowd_boxes.reshape(-1, 4))  # [N, B*K]
        ioa = ioa.view(-1, batch, num_crowd).permute(1, 0, 2)  # [B, N, K]
        if crowd_mask is not None:
            ioa = ioa.masked_fill(~crowd_mask.to(device=anchors.device, dtype=torch.bool)[:, None, :], 0.0)
        return ioa.amax(dim=2) > self.crowd_ioa_threshold
