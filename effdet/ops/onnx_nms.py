"""Exportable hard NMS: an autograd Function that is ONNX ``NonMaxSuppression`` in a traced graph and
torchvision's NMS when run eagerly (the ``detections`` form of :mod:`effdet.export`)."""
from __future__ import annotations

import torch


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
