"""The box coder: xyxy boxes as ``(ty, tx, th, tw)`` codes relative to xyxy anchors, and back (shared by the
matcher, the loss, post-processing and the exported detection graph)."""
from __future__ import annotations

import torch

# Added to box and anchor sizes when encoding so that degenerate boxes give finite codes.
ENCODE_EPS = 1e-7


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class BoxCoder:
    """Encodes xyxy boxes relative to xyxy anchors as ``(ty, tx, th, tw)`` and back.

    ``ty = (cy - cy_a) / h_a``, ``tx = (cx - cx_a) / w_a``, ``th = log(h / h_a)``, ``tw = log(w / w_a)``
    (no scale factors). Encoding adds ``eps`` to all sizes, as the reference does, so zero-size boxes
    stay finite; decoding is the exact inverse without ``eps`` and does not clamp the codes.

    Both compute in float32 at least, whatever the inputs' dtype (half-precision inputs under fp16/bf16
    autocast would turn ``eps`` into 0, hence ``log(0) = -inf``, and overflow ``exp``), and return that dtype.
    """

    def __init__(self, eps: float = ENCODE_EPS) -> None:
        self.eps = eps

    def encode(self, boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """``boxes`` ``[..., 4]`` xyxy, ``anchors`` ``[..., 4]`` xyxy (broadcastable) -> codes ``[..., 4]``."""
        boxes, anchors = _at_least_float32(boxes), _at_least_float32(anchors)
        anchor_w = anchors[..., 2] - anchors[..., 0]
        anchor_h = anchors[..., 3] - anchors[..., 1]
        anchor_cx = anchors[..., 0] + anchor_w / 2.0
        anchor_cy = anchors[..., 1] + anchor_h / 2.0
        box_w = boxes[..., 2] - boxes[..., 0]
        box_h = boxes[..., 3] - boxes[..., 1]
        box_cx = boxes[..., 0] + box_w / 2.0
        box_cy = boxes[..., 1] + box_h / 2.0
        anchor_w = anchor_w + self.eps
        anchor_h = anchor_h + self.eps
        box_w = box_w + self.eps
        box_h = box_h + self.eps
        ty = (box_cy - anchor_cy) / anchor_h
        tx = (box_cx - anchor_cx) / anchor_w
        th = torch.log(box_h / anchor_h)
        tw = torch.log(box_w / anchor_w)
        return torch.stack([ty, tx, th, tw], dim=-1)

    def decode(self, codes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
        """``codes`` ``[..., 4]`` (ty, tx, th, tw), ``anchors`` ``[..., 4]`` xyxy -> boxes ``[..., 4]`` xyxy."""
        codes, anchors = _at_least_float32(codes), _at_least_float32(anchors)
        anchor_cx = (anchors[..., 0] + anchors[..., 2]) / 2
        anchor_cy = (anchors[..., 1] + anchors[..., 3]) / 2
        anchor_w = anchors[..., 2] - anchors[..., 0]
        anchor_h = anchors[..., 3] - anchors[..., 1]
        ty, tx, th, tw = codes.unbind(dim=-1)
        width = torch.exp(tw) * anchor_w
        height = torch.exp(th) * anchor_h
        cy = ty * anchor_h + anchor_cy
        cx = tx * anchor_w + anchor_cx
        return torch.stack([cx - width / 2.0, cy - height / 2.0, cx + width / 2.0, cy + height / 2.0], dim=-1)
