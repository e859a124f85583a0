"""BiFPN: the bidirectional weighted feature pyramid of EfficientDet.

The stack takes backbone features for levels ``min_level .. min_level + n - 1`` (P3, P4, P5), makes the
missing coarser levels (P6, P7, and P8 for D7x) from the last one (1×1 conv + BN where the width differs,
then 3×3/2 max-pool), and runs ``num_layers`` identical-in-shape BiFPN layers over levels
``min_level .. max_level``.

One layer is a graph of fusion nodes (``bifpn_graph``): a top-down pass from ``max_level - 1`` to
``min_level``, then a bottom-up pass from ``min_level + 1`` to ``max_level``. A node resizes its inputs to
its level (nearest upsampling from coarser levels, 3×3/2 max-pool from the finer one, a 1×1 conv + BN
where an input's width is not ``fpn_channels``), fuses them, and applies activation → separable 3×3 conv → BN.

Fusion (``fusion``):
  ``"fast"``  fast normalised fusion, ``sum_i relu(w_i) x_i / (sum_i relu(w_i) + 1e-4)`` (D0–D5);
  ``"attn"``  softmax-weighted fusion, ``sum_i softmax(w)_i x_i``;
  ``"sum"``   plain sum (D6, D7, D7x and the Lite models).

Every block takes its layers as factories (see :mod:`backbones.layers`), resolved once from the model's config by
:mod:`effdet.modeling.layers`: ``conv_layer(in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False)``
for every conv, ``pool_layer(kernel_size, stride)`` for the 3×3/2 max-pools, ``norm_layer(num_channels)`` for every
norm, ``act_layer()`` for the activation of each node.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones.layers import (ActLayer, ConvLayer, NormLayer, PoolLayer, SeparableConv2d, act_layer_for, conv_layer_for,
                             norm_layer_for, pool_layer_for)

from ..choices import FUSION_METHODS

FAST_FUSION_EPS = 1e-4


@dataclass(frozen=True)
class FusionNode:
    """One node of a BiFPN layer: the level it produces and the ids of the nodes it fuses.

    Ids ``0 .. num_levels - 1`` are the layer's inputs (``min_level`` first); node ``k`` gets id
    ``num_levels + k``.
    """

    level: int
    inputs: tuple[int, ...]


def bifpn_graph(min_level: int, max_level: int) -> list[FusionNode]:
    """The BiFPN node list: top-down nodes (max_level-1 … min_level), then bottom-up (min_level+1 … max_level).

    Top-down node at level l fuses (latest l, latest l+1). Bottom-up node at level l fuses every node of
    level l so far (the input and, below the top, the top-down node) and the latest node of level l-1.
    """
    num_levels = max_level - min_level + 1
    ids_of_level = {min_level + i: [i] for i in range(num_levels)}
    nodes: list[FusionNode] = []

    def add(level: int, inputs: list[int]) -> None:
        nodes.append(FusionNode(level, tuple(inputs)))
        ids_of_level[level].append(num_levels + len(nodes) - 1)

    for level in range(max_level - 1, min_level - 1, -1):
        add(level, [ids_of_level[level][-1], ids_of_level[level + 1][-1]])
    for level in range(min_level + 1, max_level + 1):
        add(level, ids_of_level[level] + [ids_of_level[level - 1][-1]])
    return nodes


def output_ids(nodes: Sequence[FusionNode], min_level: int, max_level: int) -> list[int]:
    """Ids of the last node of every level, ``min_level`` first: the layer's outputs."""
    num_levels = max_level - min_level + 1
    latest = {min_level + i: i for i in range(num_levels)}
    for k, node in enumerate(nodes):
        latest[node.level] = num_levels + k
    return [latest[level] for level in range(min_level, max_level + 1)]


class ChannelProjection(nn.Sequential):
    """1×1 conv + norm bringing an input to ``fpn_channels`` (only where its width differs):
    ``conv_layer(in_channels, out_channels, 1, bias=conv_bias)`` then ``norm_layer(out_channels)``."""

    conv_bn_pair = ("conv", "bn")  # see backbones.layers.fuse_batchnorm

    def __init__(self, in_channels: int, out_channels: int, conv_bias: bool, *, conv_layer: ConvLayer,
                 norm_layer: NormLayer):
        super().__init__()
        self.conv = conv_layer(in_channels, out_channels, 1, bias=conv_bias)
        self.bn = norm_layer(out_channels)


class BiFPNNode(nn.Module):
    """Resize, project and fuse the inputs of one node, then act → separable conv → BN.

    Inputs: a list of [B, C_i, H_i, W_i] maps of levels ``input_levels``; output [B, fpn_channels, H, W] at
    ``level``, where (H, W) is the size of the input at the node's own level.
    """

    def __init__(
        self,
        level: int,
        input_levels: Sequence[int],
        input_channels: Sequence[int],
        fpn_channels: int,
        fusion: str,
        conv_bias: bool,
        *,
        conv_layer: ConvLayer,
        pool_layer: PoolLayer,
        norm_layer: NormLayer,
        act_layer: ActLayer,
    ):
        super().__init__()
        if fusion not in FUSION_METHODS:
            raise ValueError(f"unknown fusion {fusion!r}; valid: {list(FUSION_METHODS)}")
        if level not in input_levels:
            raise ValueError(f"a node at level {level} needs an input of its own level, got {list(input_levels)}")
        for in_level in input_levels:
            if abs(in_level - level) > 1:
                raise ValueError(f"node at level {level} cannot fuse level {in_level}: only adjacent levels")
        self.level = level
        self.input_levels = tuple(input_levels)
        self.size_source = self.input_levels.index(level)
        self.fusion = fusion
        self.projections = nn.ModuleDict({
            str(j): ChannelProjection(c, fpn_channels, conv_bias, conv_layer=conv_layer, norm_layer=norm_layer)
            for j, c in enumerate(input_channels) if c != fpn_channels
        })
        self.downsample = pool_layer(3, 2) if any(l < level for l in input_levels) else None
        self.fusion_weights = nn.Parameter(torch.ones(len(input_levels))) if fusion != "sum" else None
        self.act = act_layer()
        self.conv = SeparableConv2d(fpn_channels, fpn_channels, 3, conv_layer=conv_layer, norm_layer=norm_layer,
                                    pointwise_bias=conv_bias)

    def _fusion_coefficients(self, dtype: torch.dtype) -> list[torch.Tensor] | None:
        if self.fusion_weights is None:
            return None
        weights = self.fusion_weights.to(dtype)
        if self.fusion == "attn":
            weights = torch.softmax(weights, dim=0)
        else:
            weights = F.relu(weights)
            weights = weights / (weights.sum() + FAST_FUSION_EPS)
        return list(weights.unbind(0))

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        target_size = inputs[self.size_source].shape[-2:]
        coefficients = self._fusion_coefficients(inputs[0].dtype)
        fused = None
        for j, (x, in_level) in enumerate(zip(inputs, self.input_levels)):
            projection = self.projections[str(j)] if str(j) in self.projections else None
            if projection is not None:
                x = projection(x)
            if in_level < self.level:
                x = self.downsample(x)
            elif in_level > self.level:
                x = F.interpolate(x, size=target_size, mode="nearest")
            if coefficients is not None:
                x = x * coefficients[j]
            fused = x if fused is None else fused + x
        return self.conv(self.act(fused))


class BiFPNLayer(nn.Module):
    """One BiFPN layer: list of ``num_levels`` maps (``min_level`` first) → list of ``num_levels`` maps
    of ``fpn_channels`` channels at the same sizes."""

    def __init__(self, min_level: int, max_level: int, input_channels: Sequence[int], fpn_channels: int,
                 fusion: str, conv_bias: bool, *, conv_layer: ConvLayer, pool_layer: PoolLayer, norm_layer: NormLayer,
                 act_layer: ActLayer):
        super().__init__()
        layers = dict(conv_layer=conv_layer, pool_layer=pool_layer, norm_layer=norm_layer, act_layer=act_layer)
        graph = bifpn_graph(min_level, max_level)
        channels = list(input_channels) + [fpn_channels] * len(graph)
        levels = list(range(min_level, max_level + 1)) + [node.level for node in graph]
        self.node_inputs = [node.inputs for node in graph]
        self.outputs = output_ids(graph, min_level, max_level)
        self.nodes = nn.ModuleList(
            BiFPNNode(node.level, [levels[i] for i in node.inputs], [channels[i] for i in node.inputs],
                      fpn_channels, fusion, conv_bias, **layers)
            for node in graph
        )

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        values = list(features)
        for node, inputs in zip(self.nodes, self.node_inputs):
            values.append(node([values[i] for i in inputs]))
        return [values[i] for i in self.outputs]


class ExtraLevel(nn.Module):
    """Makes the next coarser level from the previous one: [1×1 conv + norm] → 3×3/2 max-pool."""

    def __init__(self, in_channels: int, fpn_channels: int, conv_bias: bool, *, conv_layer: ConvLayer,
                 pool_layer: PoolLayer, norm_layer: NormLayer):
        super().__init__()
        self.projection = (ChannelProjection(in_channels, fpn_channels, conv_bias, conv_layer=conv_layer,
                                             norm_layer=norm_layer)
                           if in_channels != fpn_channels else None)
        self.pool = pool_layer(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.projection is not None:
            x = self.projection(x)
        return self.pool(x)


class BiFPN(nn.Module):
    """The BiFPN stack.

    Args:
        in_channels: widths of the backbone features given to ``forward`` (levels ``min_level`` upward).
        fpn_channels, num_layers: width and depth of the stack (W_bifpn, D_bifpn in the paper).
        min_level, max_level: pyramid levels produced (P3–P7 by default).
        conv_layer, pool_layer, norm_layer, act_layer: the layer factories (module docstring); defaults: symmetric
            padding, batch norm with eps 1e-3 and momentum 0.01, swish.

    ``forward(features)`` takes [B, C_i, H/2^l, W/2^l] backbone maps and returns
    ``max_level - min_level + 1`` maps [B, fpn_channels, ⌈H/2^l⌉, ⌈W/2^l⌉], finest first.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        fpn_channels: int,
        num_layers: int,
        min_level: int = 3,
        max_level: int = 7,
        fusion: str = "fast",
        conv_bias: bool = False,
        *,
        conv_layer: Optional[ConvLayer] = None,
        pool_layer: Optional[PoolLayer] = None,
        norm_layer: Optional[NormLayer] = None,
        act_layer: Optional[ActLayer] = None,
    ):
        super().__init__()
        num_levels = max_level - min_level + 1
        if len(in_channels) > num_levels:
            raise ValueError(f"{len(in_channels)} backbone levels given for {num_levels} pyramid levels")
        self.num_backbone_levels = len(in_channels)
        layers = dict(conv_layer=conv_layer or conv_layer_for("symmetric"),
                      pool_layer=pool_layer or pool_layer_for("symmetric"),
                      norm_layer=norm_layer or norm_layer_for(1e-3, 0.01))
        self.extra_levels = nn.ModuleList()
        channels = list(in_channels)
        for _ in range(num_levels - len(in_channels)):
            self.extra_levels.append(ExtraLevel(channels[-1], fpn_channels, conv_bias, **layers))
            channels.append(fpn_channels)
        layers["act_layer"] = act_layer or act_layer_for("swish")
        self.layers = nn.ModuleList()
        for _ in range(num_layers):
            self.layers.append(BiFPNLayer(min_level, max_level, channels, fpn_channels, fusion, conv_bias, **layers))
            channels = [fpn_channels] * num_levels

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if len(features) != self.num_backbone_levels:
            raise ValueError(f"BiFPN expects {self.num_backbone_levels} backbone features, got {len(features)}")
        levels = list(features)
        for extra in self.extra_levels:
            levels.append(extra(levels[-1]))
        for layer in self.layers:
            levels = layer(levels)
        return levels
