"""The layer factories an EfficientDet is built with, resolved once from its :class:`ModelConfig`.

The blocks (:mod:`backbones`, :mod:`effdet.modeling.bifpn`, :mod:`heads`) take the constructors of their layers, not
settings (see :mod:`backbones.layers`); this module is the one place that turns the config's settings into them:

    ``padding``                          -> ``conv_layer``, ``pool_layer``  (TF 'same' or symmetric padding)
    ``bn_eps``, ``bn_momentum``          -> ``norm_layer`` of the BiFPN and heads (``nn.BatchNorm2d``)
    ``act``                              -> ``act_layer`` of the BiFPN and heads
    ``backbone_bn_eps``, ``..._momentum`` -> ``norm_layer`` of the backbone
    ``backbone_act`` (None: the row's)   -> ``act_layer`` of the backbone

:class:`~effdet.modeling.model.EfficientDet` (and ``create_model``) take other factories in their place
(``layers=`` / ``backbone_layers=``): a ``GroupNorm``, another activation, a conv subclass.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from backbones.efficientnet import backbone_spec
from backbones.layers import (ActLayer, ConvLayer, NormLayer, PoolLayer, act_layer_for, conv_layer_for, norm_layer_for,
                              pool_layer_for)

from .variants import ModelConfig

__all__ = ["LayerFactories", "resolve_backbone_layers", "resolve_detector_layers"]


@dataclass(frozen=True)
class LayerFactories:
    """The layer constructors of one part of the network (the backbone, or the BiFPN and heads).

    Each is called as :mod:`backbones.layers` documents: ``conv_layer(in_channels, out_channels, kernel_size,
    stride=1, groups=1, bias=False)``, ``pool_layer(kernel_size, stride)``, ``norm_layer(num_channels)``,
    ``act_layer()``; each call returns a fresh module.
    """

    conv_layer: ConvLayer
    pool_layer: PoolLayer
    norm_layer: NormLayer
    act_layer: ActLayer

    def replace(self, **factories: Any) -> LayerFactories:
        """A copy with some factories replaced (``layers.replace(norm_layer=...)``)."""
        return dataclasses.replace(self, **factories)


def resolve_detector_layers(config: ModelConfig) -> LayerFactories:
    """The factories of the BiFPN and both heads: ``config.padding``, ``config.bn_eps`` / ``bn_momentum``,
    ``config.act``."""
    return LayerFactories(conv_layer=conv_layer_for(config.padding), pool_layer=pool_layer_for(config.padding),
                          norm_layer=norm_layer_for(config.bn_eps, config.bn_momentum),
                          act_layer=act_layer_for(config.act))


def resolve_backbone_layers(config: ModelConfig) -> LayerFactories:
    """The factories of the backbone: ``config.padding``, ``config.backbone_bn_eps`` / ``backbone_bn_momentum``,
    ``config.backbone_act`` (None: the backbone row's own activation, e.g. ReLU6 for the Lite rows)."""
    act = config.backbone_act or backbone_spec(config.backbone).act
    return LayerFactories(conv_layer=conv_layer_for(config.padding), pool_layer=pool_layer_for(config.padding),
                          norm_layer=norm_layer_for(config.backbone_bn_eps, config.backbone_bn_momentum),
                          act_layer=act_layer_for(act))
