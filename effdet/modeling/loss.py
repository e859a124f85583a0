"""Training losses: sigmoid focal loss for classes, huber (or GIoU) loss for boxes."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.box_coder import BoxCoder
from ..ops.boxes import giou_loss
from ..choices import BOX_LOSSES


def focal_loss(
    logits: torch.Tensor,
    targets_onehot: torch.Tensor,
    alpha: float = 0.25,
    gamma: float = 1.5,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Element-wise sigmoid focal loss (not reduced, not normalised).

    ``loss = a_t * (1 - p_t)**gamma * BCE(logits, t')`` with ``p = sigmoid(logits)``,
    ``p_t = t*p + (1-t)*(1-p)``, ``a_t = t*alpha + (1-t)*(1-alpha)`` computed from the *unsmoothed*
    targets ``t``, and ``t' = t*(1 - label_smoothing) + label_smoothing/2`` used only in the
    cross-entropy (the formulation of the current official implementation).

    Args:
        logits: any shape.
        targets_onehot: same shape, values in [0, 1].
    """
    prob = logits.sigmoid()
    targets = targets_onehot.to(logits.dtype)
    one_minus_targets = 1.0 - targets
    p_t = targets * prob + one_minus_targets * (1.0 - prob)
    alpha_factor = targets * alpha + one_minus_targets * (1.0 - alpha)
    modulating_factor = (1.0 - p_t) ** gamma
    if label_smoothing > 0.0:
        targets = targets * (1.0 - label_smoothing) + 0.5 * label_smoothing
    cross_entropy = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    return alpha_factor * modulating_factor * cross_entropy


def huber_loss(input: torch.Tensor, target: torch.Tensor, delta: float = 0.1) -> torch.Tensor:
    """Element-wise huber loss: ``0.5*e**2`` for ``|e| <= delta``, else ``delta*(|e| - delta/2)``.

    Note: not divided by ``delta`` (this is TF's ``huber_loss``, which differs from ``smooth_l1_loss``).
    """
    abs_error = (input - target).abs()
    quadratic = abs_error.clamp(max=delta)
    return 0.5 * quadratic * quadratic + delta * (abs_error - quadratic)


class _LevelFocalSum(torch.autograd.Function):
    """Summed focal loss of one pyramid level, with a hand-written gradient.

    Avoids autograd's chain of full-size temporaries over the ``[B, A, C, H, W]`` logits (the biggest
    tensor of training): the forward pass computes the loss of every logit as if its target were 0,
    its derivative, and then replaces both at the one logit of each positive anchor by the full focal
    loss (whose small gradient comes from autograd). The backward pass is a single multiplication.
    The positive logits are gathered and written back per anchor (``[B, A, 1, H, W]``), masked where the
    anchor is not positive, so no shape depends on the data and nothing waits for the device.

    For target 0 and label smoothing ``s`` (``p = sigmoid(x)``, ``u = BCE(x, s/2) = x(1 - s/2) - log p``):
    ``f = (1-alpha) p**gamma u`` and ``f' = (1-alpha) p**gamma ((1-p)(gamma u - 1) + 1 - s/2)``.
    """

    @staticmethod
    def forward(ctx, logits, keep, target_class, alpha: float, gamma: float, label_smoothing: float):
        # logits [B, A, C, H, W]; keep [B, A, 1, H, W] (0 for ignored anchors); target_class [B, A, 1, H, W] int64:
        # the class of a positive anchor, negative otherwise
        log_prob = F.logsigmoid(logits)
        bce = torch.mul(logits, 1.0 - 0.5 * label_smoothing).sub_(log_prob)
        one_minus_prob = log_prob.exp().neg_().add_(1.0)
        prob_gamma = log_prob.mul_(gamma).exp_()
        weight = keep * (1.0 - alpha)
        total = (torch.mul(prob_gamma, bce).sum(dim=2, keepdim=True) * weight).sum()
        positive = target_class >= 0  # [B, A, 1, H, W]
        index = target_class.clamp(min=0)
        as_negative = (1.0 - alpha) * prob_gamma.gather(2, index) * bce.gather(2, index)
        needs_grad = ctx.needs_input_grad[0]
        if needs_grad:
            grad = bce.mul_(gamma).sub_(1.0).mul_(one_minus_prob).add_(1.0 - 0.5 * label_smoothing)
            grad.mul_(prob_gamma).mul_(weight)
        with torch.enable_grad():
            positive_logits = logits.gather(2, index).detach().requires_grad_()
            positive_loss = focal_loss(positive_logits, torch.ones_like(positive_logits), alpha, gamma,
                                       label_smoothing)
            if needs_grad:
                (positive_grad,) = torch.autograd.grad(positive_loss.sum(), positive_logits)
                grad.scatter_(2, index, torch.where(positive, positive_grad, grad.gather(2, index)))
        total = total + torch.where(positive, positive_loss.detach() - as_negative, 0.0).sum()
        if needs_grad:
            ctx.save_for_backward(grad)
        return total

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad * grad_output, None, None, None, None, None


class DetectionLoss(nn.Module):
    """EfficientDet loss over all anchors of a batch.

    ``loss = class_loss + box_loss_weight * box_loss`` with (normaliser ``P = sum(num_positives) + 1``):

    * ``class_loss = sum(focal_loss(logits, one_hot(cls_targets))) / P`` over all anchors except the
      ignored ones (``cls_targets == -2``); background anchors (-1) have an all-zero one-hot.
    * huber: ``box_loss = sum(huber(box_outputs - box_targets) * (box_targets != 0)) / (4 * P)``; like the
      reference and the official implementation, the mask is element-wise on non-zero targets.
    * giou: ``box_loss = sum over positive anchors of (1 - GIoU(decode(box_outputs), decode(box_targets))) / P``
      (needs ``anchors``). ``box_loss_weight`` defaults to 50 for huber and 1 for giou.

    Everything is computed in float32, also under autocast. Values equal the reference ``DetectionLoss``
    (non-legacy focal loss) to float32 rounding.
    """

    def __init__(
        self,
        num_classes: int,
        alpha: float = 0.25,
        gamma: float = 1.5,
        delta: float = 0.1,
        box_loss_weight: Optional[float] = None,
        box_loss_type: str = "huber",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if box_loss_type not in BOX_LOSSES:
            raise ValueError(f"box_loss_type must be one of {list(BOX_LOSSES)}, got {box_loss_type!r}")
        self.num_classes = num_classes
        self.alpha = alpha
        self.gamma = gamma
        self.delta = delta
        self.box_loss_type = box_loss_type
        if box_loss_weight is None:
            box_loss_weight = 50.0 if box_loss_type == "huber" else 1.0
        self.box_loss_weight = float(box_loss_weight)
        self.label_smoothing = label_smoothing
        self.box_coder = BoxCoder()

    def forward(
        self,
        class_outputs: Sequence[torch.Tensor],
        box_outputs: Sequence[torch.Tensor],
        cls_targets: torch.Tensor,
        box_targets: torch.Tensor,
        num_positives: torch.Tensor,
        anchors: Optional[torch.Tensor] = None,
        normalizer: Optional[torch.Tensor] = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the loss.

        Args:
            class_outputs: per level ``[B, A*C, H_l, W_l]`` logits.
            box_outputs: per level ``[B, A*4, H_l, W_l]`` box codes.
            cls_targets: ``[B, N]`` int, class for positives, -1 background, -2 ignore (``AnchorMatcher``).
            box_targets: ``[B, N, 4]`` codes for positives, zeros elsewhere.
            num_positives: ``[B]`` positives per image.
            anchors: ``[N, 4]`` xyxy, required for ``box_loss_type='giou'``.
            normalizer: scalar ``P`` to divide by instead of ``sum(num_positives) + 1`` (training with several
                processes passes the global batch's count; see ``DetectionModule.training_step``).

        Returns:
            dict with scalar tensors ``loss``, ``class_loss``, ``box_loss``.
        """
        device_type = cls_targets.device.type
        with torch.autocast(device_type=device_type, enabled=False):
            batch = box_targets.shape[0]
            box_codes = torch.cat([level.permute(0, 2, 3, 1).reshape(batch, -1, 4) for level in box_outputs], 1)
            box_codes = box_codes.float()
            box_targets = box_targets.float()
            if normalizer is None:
                normalizer = num_positives.float().sum() + 1.0
            normalizer = normalizer.float()

            class_loss = self._class_loss(class_outputs, cls_targets) / normalizer
            if self.box_loss_type == "huber":
                mask = box_targets != 0.0
                box_loss = (huber_loss(box_codes, box_targets, self.delta) * mask).sum() / (4.0 * normalizer)
            else:
                box_loss = self._giou_box_loss(box_codes, box_targets, cls_targets, anchors) / normalizer
            loss = class_loss + self.box_loss_weight * box_loss
        return {"loss": loss, "class_loss": class_loss, "box_loss": box_loss}

    def _class_loss(self, class_outputs: Sequence[torch.Tensor], cls_targets: torch.Tensor) -> torch.Tensor:
        """Summed focal loss over all levels. ``class_outputs`` per level ``[B, A*C, H, W]``, ``cls_targets [B, N]``.

        Same value as ``(focal_loss(flat_logits, one_hot) * (cls_targets != -2)[..., None]).sum()``
        without building the one-hot or the flattened logits (see ``_LevelFocalSum``).
        """
        total_anchors = sum(level.shape[1] // self.num_classes * level.shape[2] * level.shape[3]
                            for level in class_outputs)
        if total_anchors != cls_targets.shape[1]:
            raise ValueError(
                f"class outputs hold {total_anchors} anchors but cls_targets has {cls_targets.shape[1]}: "
                "were the targets built for another image size?"
            )
        keep = (cls_targets != -2).float()  # [B, N]
        total = cls_targets.new_zeros((), dtype=torch.float32)
        offset = 0
        for level in class_outputs:
            batch, channels, height, width = level.shape
            num_anchors = channels // self.num_classes
            count = height * width * num_anchors
            logits = level.float().view(batch, num_anchors, self.num_classes, height, width)

            def per_anchor(values: torch.Tensor) -> torch.Tensor:  # [B, N] slice of this level -> [B, A, 1, H, W]
                level_values = values[:, offset:offset + count].reshape(batch, height, width, num_anchors)
                return level_values.permute(0, 3, 1, 2).unsqueeze(2)

            total = total + _LevelFocalSum.apply(
                logits, per_anchor(keep), per_anchor(cls_targets), self.alpha, self.gamma, self.label_smoothing
            )
            offset += count
        return total

    def _giou_box_loss(
        self,
        box_codes: torch.Tensor,
        box_targets: torch.Tensor,
        cls_targets: torch.Tensor,
        anchors: Optional[torch.Tensor],
    ) -> torch.Tensor:
        if anchors is None:
            raise ValueError("box_loss_type='giou' needs the anchors passed to DetectionLoss.forward")
        # every anchor decoded, the positive ones summed: no data-dependent shapes (no host sync)
        anchors = anchors.float()[None].expand_as(box_codes)
        pred = self.box_coder.decode(box_codes, anchors)
        target = self.box_coder.decode(box_targets, anchors)
        return torch.where(cls_targets >= 0, giou_loss(pred, target), 0.0).sum()
