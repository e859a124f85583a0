"""Class and box prediction nets shared across pyramid levels.

A head is ``num_layers`` separable convs whose weights are shared by every level, each followed by a
batch norm owned by (layer, level) and the activation, then a separable "predict" conv to
``num_anchors * outputs_per_anchor`` channels. The channel layout is anchor-major, as in the official
implementation: channel ``a * outputs_per_anchor + k`` is output ``k`` of anchor ``a``.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn as nn

from backbones.layers import (ActLayer, ConvLayer, NormLayer, SeparableConv2d, act_layer_for, conv_layer_for,
                             norm_layer_for)

PRIOR_PROBABILITY = 0.01


class PredictionHead(nn.Module):
    """Maps per-level features [B, C, H_l, W_l] to per-level predictions [B, A·K, H_l, W_l].

    Args:
        in_channels: BiFPN width C.
        outputs_per_anchor: K (number of classes for the class net, 4 for the box net).
        num_anchors: A (9: 3 scales × 3 aspect ratios).
        num_layers: separable conv repeats before the predict conv.
        num_levels: pyramid levels served (one batch norm per level per repeat).
        bias_init: initial bias of the predict conv (``-log((1 - p) / p)`` gives a prior probability p).
        pointwise_bias: bias on the repeat convs before BN (TF-ported checkpoints have it).
        conv_layer: makes every conv, ``conv_layer(in_channels, out_channels, kernel_size, stride=1, groups=1,
            bias=False)`` (see :class:`backbones.layers.SeparableConv2d`; default: symmetric padding).
        norm_layer: ``norm_layer(in_channels)`` makes each (repeat, level) norm (default: batch norm, eps 1e-3,
            momentum 0.01).
        act_layer: ``act_layer()`` makes the activation (default: swish).
    """

    def __init__(
        self,
        in_channels: int,
        outputs_per_anchor: int,
        num_anchors: int = 9,
        num_layers: int = 3,
        num_levels: int = 5,
        pointwise_bias: bool = False,
        bias_init: float = 0.0,
        *,
        conv_layer: Optional[ConvLayer] = None,
        norm_layer: Optional[NormLayer] = None,
        act_layer: Optional[ActLayer] = None,
    ):
        super().__init__()
        conv_layer = conv_layer or conv_layer_for("symmetric")
        norm_layer = norm_layer or norm_layer_for(1e-3, 0.01)
        act_layer = act_layer or act_layer_for("swish")
        self.num_levels = num_levels
        self.outputs_per_anchor = outputs_per_anchor
        self.num_anchors = num_anchors
        self.convs = nn.ModuleList(
            SeparableConv2d(in_channels, in_channels, 3, conv_layer=conv_layer, pointwise_bias=pointwise_bias)
            for _ in range(num_layers)
        )
        self.norms = nn.ModuleList(
            nn.ModuleList(norm_layer(in_channels) for _ in range(num_levels))
            for _ in range(num_layers)
        )
        self.act = act_layer()
        self.predict = SeparableConv2d(in_channels, num_anchors * outputs_per_anchor, 3, conv_layer=conv_layer,
                                       pointwise_bias=True)
        self.reset_parameters(bias_init)

    def reset_parameters(self, bias_init: float = 0.0) -> None:
        """Official head initialisation: convs ~ N(0, 1/fan_in), predict bias = ``bias_init``, BN γ=1 β=0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                nn.init.normal_(m.weight, 0.0, math.sqrt(1.0 / fan_in))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.predict.pointwise.bias, bias_init)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != self.num_levels:
            raise ValueError(f"head expects {self.num_levels} feature levels, got {len(features)}")
        outputs = []
        for level, x in enumerate(features):
            for conv, norms in zip(self.convs, self.norms):
                x = self.act(norms[level](conv(x)))
            outputs.append(self.predict(x))
        return outputs


def class_head(in_channels: int, num_classes: int, **kwargs) -> PredictionHead:
    """Class net: logits [B, A·num_classes, H, W] per level, biased to a prior probability of 0.01."""
    bias = -math.log((1.0 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY)
    return PredictionHead(in_channels, num_classes, bias_init=bias, **kwargs)


def box_head(in_channels: int, **kwargs) -> PredictionHead:
    """Box net: regressions [B, A·4, H, W] per level in (ty, tx, th, tw) anchor coding."""
    return PredictionHead(in_channels, 4, bias_init=0.0, **kwargs)
