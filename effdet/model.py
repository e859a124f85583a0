"""EfficientDet = EfficientNet backbone + BiFPN + shared class/box heads, and ``create_model``."""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn as nn

from backbones import create_backbone
from heads import box_head, class_head

from .bifpn import BiFPN
from .config import ModelConfig, list_models, model_config


class EfficientDet(nn.Module):
    """The raw detector network.

    ``forward(images)`` takes **normalised** images [B, 3, H, W] (see ``effdet.preprocess.normalize``; the
    network never normalises) and returns ``(class_outputs, box_outputs)``: lists over levels
    ``min_level .. max_level`` of class logits [B, A·num_classes, H_l, W_l] and box regressions
    [B, A·4, H_l, W_l], anchor-major channels (A = 9 anchors), with H_l = ⌈H / 2^l⌉.

    H and W must be multiples of 2^min_level (8); the coarser levels then follow ⌈size / stride⌉ exactly
    as the official TF models (Lite0 at 320: 40, 20, 10, 5, 3). Letterboxing in pre-processing always
    produces the configured ``image_size``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.backbone = create_backbone(
            config.backbone,
            padding=config.padding,
            bn_eps=config.backbone_bn_eps,
            bn_momentum=config.backbone_bn_momentum,
            drop_path_rate=config.drop_path_rate,
            act=config.backbone_act,
            out_strides=tuple(2 ** level for level in range(config.min_level, 6)),
            **{key: value for key, value in (("width", config.backbone_width), ("depth", config.backbone_depth))
               if value is not None},  # fractional φ: interpolated coefficients (effdet.scaling)
        )
        # settings the BiFPN and both heads share
        common: dict[str, Any] = dict(act=config.act, padding=config.padding, bn_eps=config.bn_eps,
                                      bn_momentum=config.bn_momentum)
        self.fpn = BiFPN(self.backbone.feature_channels, config.fpn_channels, config.fpn_layers,
                         min_level=config.min_level, max_level=config.max_level, fusion=config.fusion,
                         conv_bias=config.conv_bias, **common)
        head_kwargs: dict[str, Any] = dict(num_anchors=config.num_anchors, num_layers=config.head_layers,
                                           num_levels=config.num_levels, pointwise_bias=config.conv_bias, **common)
        self.class_net = class_head(config.fpn_channels, config.num_classes, **head_kwargs)
        self.box_net = box_head(config.fpn_channels, **head_kwargs)
        self._head_kwargs = head_kwargs
        self.reset_fpn_parameters()

    def reset_fpn_parameters(self) -> None:
        """Official BiFPN initialisation: convs Glorot-uniform (fan average), BN γ=1 β=0, fusion weights 1."""
        for m in self.fpn.modules():
            if isinstance(m, nn.Conv2d):
                receptive = m.weight[0, 0].numel()
                fan_in = m.weight.shape[1] * receptive
                fan_out = m.weight.shape[0] * receptive // m.groups
                limit = math.sqrt(3.0 / max(1.0, (fan_in + fan_out) / 2.0))
                nn.init.uniform_(m.weight, -limit, limit)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def reset_class_head(self, num_classes: int) -> None:
        """Replace the class net by a freshly initialised one for ``num_classes`` (fine-tuning)."""
        device = self.class_net.predict.pointwise.weight.device
        self.config.num_classes = num_classes
        self.class_net = class_head(self.config.fpn_channels, num_classes, **self._head_kwargs).to(device)

    def check_input(self, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W], got shape {list(images.shape)}")
        multiple = 2 ** self.config.min_level
        height, width = images.shape[-2:]
        if height % multiple or width % multiple:
            fit = [int(math.ceil(s / multiple) * multiple) for s in (height, width)]
            raise ValueError(
                f"input size {height}x{width} is not a multiple of {multiple} (2**min_level); pad the image to "
                f"{fit[0]}x{fit[1]} or letterbox it to the model's image_size {self.config.image_size} "
                f"(effdet.preprocess.letterbox does both)")

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        self.check_input(images)
        features = self.backbone.forward_features(images)
        pyramid = self.fpn(features)
        return self.class_net(pyramid), self.box_net(pyramid)


def create_model(
    name_or_phi: str | int | None = None,
    num_classes: Optional[int] = None,
    weights: Any = None,
    *,
    reset_class_head: bool = False,
    trust_checkpoint: bool = False,
    **overrides: Any,
) -> EfficientDet:
    """Build an EfficientDet variant by name (see :func:`list_models`) or by φ (0–7 → D0–D7).

    Any :class:`~effdet.config.ModelConfig` field can be overridden (``image_size``, ``fpn_channels``,
    ``max_level``, ``padding``, ``act`` …). The reference package's names (``tf_efficientdet_d0`` …) are
    accepted as aliases that select the settings of its TF-ported checkpoints. Without ``weights`` the
    defaults are ``efficientdet_d0`` and 90 classes.

    ``weights`` (a path, a loaded checkpoint or an ``effdet.weights.CheckpointInfo``) builds the model the
    checkpoint needs and loads it: the name may be left out (the variant, class count, fusion, conv biases,
    padding and BN settings then come from the checkpoint, see ``effdet.weights``); a given name must have
    the checkpoint's sizes. ``num_classes`` different from the checkpoint's needs ``reset_class_head=True``
    (the class head is then re-initialised, everything else loaded). ``trust_checkpoint`` allows files that
    need full unpickling (they can run code).
    """
    if weights is None:
        config = model_config("efficientdet_d0" if name_or_phi is None else name_or_phi,
                              num_classes=90 if num_classes is None else num_classes, **overrides)
        return EfficientDet(config)
    from .weights import config_for_checkpoint, load_weights, read_weights

    info = read_weights(weights, trust=trust_checkpoint)
    config = config_for_checkpoint(info, name_or_phi, num_classes=num_classes, **overrides)
    model = EfficientDet(config)
    load_weights(model, info, reset_class_head=reset_class_head)
    return model


__all__ = ["EfficientDet", "create_model", "list_models"]
