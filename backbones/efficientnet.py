"""EfficientNet B0–B7 and EfficientNet-Lite0–4, built from (width, depth) coefficients and one block table.

Every variant is a row of ``EFFICIENTNET_VARIANTS``; the network itself is always the same code:
a stem conv, seven stages of MBConv blocks described by compact arch strings (``BLOCK_TABLE``), and an
optional ImageNet classifier head. The Lite family differs only by data in its rows: ReLU6 instead of
swish, no squeeze-excitation, stem/head widths and first/last stage depths not scaled.

Arch strings (one per stage): ``{ds|ir}_r{repeats}_k{kernel}_s{stride}_e{expansion}_c{channels}[_se{ratio}]``;
``ds`` is a depthwise-separable block (no expansion conv), ``ir`` an inverted residual (MBConv).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from typing import Optional, Sequence

import torch
import torch.nn as nn

from .layers import (ActLayer, ConvBnAct, ConvLayer, DropPath, NormLayer, act_layer_for, conv_layer_for, norm_layer_for,
                     round_channels)

BLOCK_TABLE: tuple[str, ...] = (
    "ds_r1_k3_s1_e1_c16_se0.25",
    "ir_r2_k3_s2_e6_c24_se0.25",
    "ir_r2_k5_s2_e6_c40_se0.25",
    "ir_r3_k3_s2_e6_c80_se0.25",
    "ir_r3_k5_s1_e6_c112_se0.25",
    "ir_r4_k5_s2_e6_c192_se0.25",
    "ir_r1_k3_s1_e6_c320_se0.25",
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280


@dataclass(frozen=True)
class StageSpec:
    """One stage of the block table, before width/depth scaling."""

    block: str  # "ds" or "ir"
    repeats: int
    kernel_size: int
    stride: int
    expansion: int
    channels: int
    se_ratio: float = 0.0


_ARCH_RE = re.compile(r"^(ds|ir)_r(\d+)_k(\d+)_s(\d+)_e(\d+)_c(\d+)(?:_se([0-9.]+))?$")


def parse_stage(arch: str) -> StageSpec:
    """Parse one compact arch string such as ``ir_r2_k3_s2_e6_c24_se0.25``."""
    match = _ARCH_RE.match(arch)
    if match is None:
        raise ValueError(f"bad stage arch string {arch!r}; expected e.g. 'ir_r2_k3_s2_e6_c24_se0.25'")
    block, r, k, s, e, c, se = match.groups()
    return StageSpec(block, int(r), int(k), int(s), int(e), int(c), float(se) if se else 0.0)


@dataclass(frozen=True)
class EfficientNetSpec:
    """A row of the variant table. ``width``/``depth`` are the compound-scaling coefficients."""

    width: float
    depth: float
    resolution: int
    dropout: float
    act: str = "swish"
    use_se: bool = True
    scale_stem_head: bool = True
    scale_first_last_depth: bool = True
    block_table: tuple[str, ...] = BLOCK_TABLE


_LITE = dict(act="relu6", use_se=False, scale_stem_head=False, scale_first_last_depth=False)

EFFICIENTNET_VARIANTS: dict[str, EfficientNetSpec] = {
    "efficientnet_b0": EfficientNetSpec(1.0, 1.0, 224, 0.2),
    "efficientnet_b1": EfficientNetSpec(1.0, 1.1, 240, 0.2),
    "efficientnet_b2": EfficientNetSpec(1.1, 1.2, 260, 0.3),
    "efficientnet_b3": EfficientNetSpec(1.2, 1.4, 300, 0.3),
    "efficientnet_b4": EfficientNetSpec(1.4, 1.8, 380, 0.4),
    "efficientnet_b5": EfficientNetSpec(1.6, 2.2, 456, 0.4),
    "efficientnet_b6": EfficientNetSpec(1.8, 2.6, 528, 0.5),
    "efficientnet_b7": EfficientNetSpec(2.0, 3.1, 600, 0.5),
    "efficientnet_lite0": EfficientNetSpec(1.0, 1.0, 224, 0.2, **_LITE),
    "efficientnet_lite1": EfficientNetSpec(1.0, 1.1, 240, 0.2, **_LITE),
    "efficientnet_lite2": EfficientNetSpec(1.1, 1.2, 260, 0.3, **_LITE),
    "efficientnet_lite3": EfficientNetSpec(1.2, 1.4, 280, 0.3, **_LITE),
    "efficientnet_lite4": EfficientNetSpec(1.4, 1.8, 300, 0.3, **_LITE),
}


@dataclass(frozen=True)
class BlockArgs:
    """One concrete block after scaling."""

    in_channels: int
    out_channels: int
    kernel_size: int
    stride: int
    expansion: int
    se_ratio: float


def scaled_stages(spec: EfficientNetSpec) -> tuple[int, list[list[BlockArgs]], int]:
    """Apply the width/depth coefficients to the block table.

    Returns ``(stem_channels, stages, head_channels)``; ``stages[i]`` lists the blocks of stage ``i``.
    Depth: ``ceil(repeats * depth)``; width: ``round_channels(channels * width)`` (multiples of 8).
    """
    stem = round_channels(STEM_CHANNELS, spec.width) if spec.scale_stem_head else STEM_CHANNELS
    head = round_channels(HEAD_CHANNELS, spec.width) if spec.scale_stem_head else HEAD_CHANNELS
    table = [parse_stage(arch) for arch in spec.block_table]
    stages: list[list[BlockArgs]] = []
    in_channels = stem
    for index, stage in enumerate(table):
        fixed = not spec.scale_first_last_depth and index in (0, len(table) - 1)
        repeats = stage.repeats if fixed else int(math.ceil(stage.repeats * spec.depth))
        out_channels = round_channels(stage.channels, spec.width)
        se_ratio = stage.se_ratio if spec.use_se else 0.0
        blocks = []
        for i in range(repeats):
            blocks.append(BlockArgs(in_channels, out_channels, stage.kernel_size, stage.stride if i == 0 else 1,
                                    stage.expansion, se_ratio))
            in_channels = out_channels
        stages.append(blocks)
    return stem, stages, head


class SqueezeExcite(nn.Module):
    """Channel gating: ``x * sigmoid(expand(act(reduce(mean_hw(x)))))``; reduce width = ratio × block input.

    ``conv_layer(channels, reduced_channels, 1, bias=True)`` and back make the 1×1 convs, ``act_layer()`` the act.
    """

    def __init__(self, channels: int, reduced_channels: int, *, conv_layer: ConvLayer, act_layer: ActLayer):
        super().__init__()
        self.reduce = conv_layer(channels, reduced_channels, 1, bias=True)
        self.act = act_layer()
        self.expand = conv_layer(reduced_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.expand(self.act(self.reduce(scale)))
        return x * scale.sigmoid()


class MBConv(nn.Module):
    """Mobile inverted bottleneck: [1×1 expand] → k×k depthwise → [SE] → 1×1 project (+ residual).

    With ``expansion == 1`` there is no expand conv (the 'ds' block). The residual (with drop-path) is used
    when stride is 1 and channel counts match. Shapes: [B, Cin, H, W] → [B, Cout, ⌈H/s⌉, ⌈W/s⌉].
    Every conv comes from ``conv_layer``, every norm from ``norm_layer``, every activation from ``act_layer``
    (:class:`~backbones.layers.ConvBnAct`, :class:`SqueezeExcite`); the projection has no activation.
    """

    def __init__(self, args: BlockArgs, *, conv_layer: ConvLayer, norm_layer: NormLayer, act_layer: ActLayer,
                 drop_path_rate: float = 0.0):
        super().__init__()
        layers = dict(conv_layer=conv_layer, norm_layer=norm_layer)
        mid = args.in_channels * args.expansion
        self.expand = (ConvBnAct(args.in_channels, mid, 1, act_layer=act_layer, **layers)
                       if args.expansion != 1 else None)
        self.depthwise = ConvBnAct(mid, mid, args.kernel_size, args.stride, groups=mid, act_layer=act_layer, **layers)
        reduced = max(1, int(round(args.in_channels * args.se_ratio)))
        self.se = (SqueezeExcite(mid, reduced, conv_layer=conv_layer, act_layer=act_layer)
                   if args.se_ratio > 0 else None)
        self.project = ConvBnAct(mid, args.out_channels, 1, act_layer=None, **layers)
        self.has_residual = args.stride == 1 and args.in_channels == args.out_channels
        self.drop_path = DropPath(drop_path_rate) if self.has_residual and drop_path_rate > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        if self.expand is not None:
            x = self.expand(x)
        x = self.depthwise(x)
        if self.se is not None:
            x = self.se(x)
        x = self.project(x)
        if self.has_residual:
            if self.drop_path is not None:
                x = self.drop_path(x)
            x = x + shortcut
        return x


class ClassifierHead(nn.Module):
    """1×1 conv to the head width → global average pool → dropout → linear: [B, C, H, W] → [B, num_classes]."""

    def __init__(self, in_channels: int, head_channels: int, num_classes: int, dropout: float, *,
                 conv_layer: ConvLayer, norm_layer: NormLayer, act_layer: ActLayer):
        super().__init__()
        self.conv = ConvBnAct(in_channels, head_channels, 1, conv_layer=conv_layer, norm_layer=norm_layer,
                              act_layer=act_layer)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).mean((2, 3))
        return self.fc(self.dropout(x))


class EfficientNet(nn.Module):
    """EfficientNet feature extractor, optionally with its ImageNet classifier head.

    ``forward_features(x)`` maps images [B, 3, H, W] (normalised) to the feature maps at ``out_strides``
    (default 8, 16, 32): a list of [B, C_i, ⌈H/s_i⌉, ⌈W/s_i⌉] with C_i given by ``feature_channels``.
    ``forward(x)`` returns those features, or classifier logits [B, num_classes] when built with
    ``num_classes > 0``.

    The layers come from factories (see :mod:`backbones.layers`), resolved once by the caller (by name:
    :func:`create_backbone`): ``conv_layer(in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False)``
    (default: symmetric padding), ``norm_layer(num_channels)`` (default: batch norm, eps 1e-3, momentum 0.1) and
    ``act_layer()`` (default: the row's activation, ``spec.act``).
    """

    def __init__(
        self,
        spec: EfficientNetSpec,
        conv_layer: Optional[ConvLayer] = None,
        norm_layer: Optional[NormLayer] = None,
        act_layer: Optional[ActLayer] = None,
        drop_path_rate: float = 0.2,
        num_classes: int = 0,
        out_strides: Sequence[int] = (8, 16, 32),
    ):
        super().__init__()
        self.spec = spec
        layers = dict(conv_layer=conv_layer or conv_layer_for("symmetric"),
                      norm_layer=norm_layer or norm_layer_for(1e-3, 0.1),
                      act_layer=act_layer or act_layer_for(spec.act))
        stem_channels, stage_args, head_channels = scaled_stages(spec)
        self.stem = ConvBnAct(3, stem_channels, 3, stride=2, **layers)

        total_blocks = sum(len(s) for s in stage_args)
        block_index = 0
        self.stages = nn.ModuleList()
        stage_strides = []
        stride = 2
        for blocks in stage_args:
            modules = []
            for args in blocks:
                rate = drop_path_rate * block_index / total_blocks
                modules.append(MBConv(args, drop_path_rate=rate, **layers))
                block_index += 1
            stride *= blocks[0].stride
            stage_strides.append(stride)
            self.stages.append(nn.Sequential(*modules))

        # The feature taken for stride s is the output of the last stage running at stride s.
        self.out_stages: list[int] = []
        for s in out_strides:
            candidates = [i for i, st in enumerate(stage_strides) if st == s]
            if not candidates:
                raise ValueError(f"no stage of the backbone runs at stride {s}; strides are {stage_strides}")
            self.out_stages.append(candidates[-1])
        self.out_strides = tuple(out_strides)
        self.feature_channels = [stage_args[i][-1].out_channels for i in self.out_stages]
        self.classifier = (
            ClassifierHead(stage_args[-1][-1].out_channels, head_channels, num_classes, spec.dropout, **layers)
            if num_classes > 0 else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """EfficientNet's initialisation: conv ~ N(0, sqrt(2 / fan_out)), BN γ=1 β=0, linear ~ U(±1/sqrt(out))."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        x = self.stem(x)
        for index, stage in enumerate(self.stages[: self.out_stages[-1] + 1]):
            x = stage(x)
            if index in self.out_stages:
                features.append(x)
        return features

    def forward(self, x: torch.Tensor):
        if self.classifier is None:
            return self.forward_features(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.classifier(x)


def list_backbones() -> list[str]:
    return sorted(EFFICIENTNET_VARIANTS)


def backbone_spec(name: str) -> EfficientNetSpec:
    """The row of ``EFFICIENTNET_VARIANTS`` named ``name`` (a ValueError listing the names if there is none)."""
    try:
        return EFFICIENTNET_VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; valid: {list_backbones()}") from None


def create_backbone(
    name: str,
    *,
    padding: Optional[str] = None,
    bn_eps: Optional[float] = None,
    bn_momentum: Optional[float] = None,
    act: Optional[str] = None,
    conv_layer: Optional[ConvLayer] = None,
    norm_layer: Optional[NormLayer] = None,
    act_layer: Optional[ActLayer] = None,
    **kwargs,
) -> EfficientNet:
    """Build a backbone by table name (``efficientnet_b0`` … ``b7``, ``efficientnet_lite0`` … ``lite4``).

    The settings become the layer factories of :class:`EfficientNet` here, once: ``padding`` ("symmetric", the
    default, or "same") the ``conv_layer``, ``bn_eps`` / ``bn_momentum`` (default 1e-3 / 0.1) the ``norm_layer``,
    ``act`` (default: the row's) the ``act_layer``; or pass the factories themselves (not both forms of one).
    Other keyword arguments go to :class:`EfficientNet` (drop_path_rate, num_classes, out_strides);
    ``width``/``depth`` override the row's coefficients.
    """
    spec = backbone_spec(name)
    for setting, factory, factory_name in ((padding, conv_layer, "conv_layer"), (act, act_layer, "act_layer"),
                                           (bn_eps if bn_eps is not None else bn_momentum, norm_layer, "norm_layer")):
        if setting is not None and factory is not None:
            raise ValueError(f"create_backbone got both {factory_name} and the setting it replaces; pass one")
    overrides = {k: kwargs.pop(k) for k in ("width", "depth") if k in kwargs}
    if overrides:
        spec = replace(spec, **overrides)
    return EfficientNet(
        spec,
        conv_layer=conv_layer or conv_layer_for(padding or "symmetric"),
        norm_layer=norm_layer or norm_layer_for(1e-3 if bn_eps is None else bn_eps,
                                                0.1 if bn_momentum is None else bn_momentum),
        act_layer=act_layer or act_layer_for(act or spec.act),
        **kwargs,
    )
