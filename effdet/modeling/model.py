"""EfficientDet = EfficientNet backbone + BiFPN + shared class/box heads (modules only; building by name is
:mod:`effdet.modeling.factory`)."""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
import torch.nn as nn

from backbones import create_backbone
from heads import box_head, class_head

from .bifpn import BiFPN
from .layers import LayerFactories, resolve_backbone_layers, resolve_detector_layers
from .variants import ModelConfig


class EfficientDet(nn.Module):
    """The raw detector network.

    ``forward(images)`` takes **normalised** images [B, 3, H, W] (see ``effdet.data.preprocess.normalize``; the
    network never normalises) and returns ``(class_outputs, box_outputs)``: lists over levels
    ``min_level .. max_level`` of class logits [B, A·num_classes, H_l, W_l] and box regressions
    [B, A·4, H_l, W_l], anchor-major channels (A = 9 anchors), with H_l = ⌈H / 2^l⌉.

    H and W must be multiples of 2^min_level (8); the coarser levels then follow ⌈size / stride⌉ exactly
    as the official TF models (Lite0 at 320: 40, 20, 10, 5, 3). Letterboxing in pre-processing always
    produces the configured ``image_size``.

    The layers are built by factories (:mod:`effdet.modeling.layers`): ``layers`` for the BiFPN and both heads,
    ``backbone_layers`` for the backbone, each resolved from ``config`` when not given (padding, BN eps/momentum,
    activation). Other factories (a ``GroupNorm``, another activation) replace those of the config's settings.
    """

    def __init__(self, config: ModelConfig, layers: Optional[LayerFactories] = None,
                 backbone_layers: Optional[LayerFactories] = None):
        super().__init__()
        self.config = config
        layers = layers or resolve_detector_layers(config)
        backbone_factories = backbone_layers or resolve_backbone_layers(config)
        self.backbone = create_backbone(
            config.backbone,
            conv_layer=backbone_factories.conv_layer,
            norm_layer=backbone_factories.norm_layer,
            act_layer=backbone_factories.act_layer,
            drop_path_rate=config.drop_path_rate,
            out_strides=tuple(2 ** level for level in range(config.min_level, 6)),
            **{key: value for key, value in (("width", config.backbone_width), ("depth", config.backbone_depth))
               if value is not None},  # fractional φ: interpolated coefficients (effdet.modeling.scaling)
        )
        # the layer factories the BiFPN and both heads share
        common: dict[str, Any] = dict(conv_layer=layers.conv_layer, norm_layer=layers.norm_layer,
                                      act_layer=layers.act_layer)
        self.fpn = BiFPN(self.backbone.feature_channels, config.fpn_channels, config.fpn_layers,
                         min_level=config.min_level, max_level=config.max_level, fusion=config.fusion,
                         conv_bias=config.conv_bias, pool_layer=layers.pool_layer, **common)
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
                f"(effdet.data.preprocess.letterbox does both)")

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        self.check_input(images)
        features = self.backbone.forward_features(images)
        pyramid = self.fpn(features)
        return self.class_net(pyramid), self.box_net(pyramid)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters of ``module`` (all of them, trainable or not)."""
    return sum(p.numel() for p in module.parameters())


__all__ = ["EfficientDet", "count_parameters"]
