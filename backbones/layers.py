"""Building blocks shared by the backbones, the BiFPN and the heads, and the layer factories they are built with.

Layer factories
---------------
Blocks do not take settings such as an activation name, a padding mode or batch-norm eps/momentum; they take the
constructors of their layers, resolved once by whoever reads the configuration (``effdet.modeling.layers`` for the
detector, :func:`backbones.create_backbone` for a backbone by name), as timm's EfficientNet builder does:

``conv_layer(in_channels, out_channels, kernel_size, stride=1, groups=1, bias=False)``
    a 2-D convolution giving ``ceil(i / stride)`` outputs (:func:`conv_layer_for` a padding mode);
``pool_layer(kernel_size, stride)``
    a max-pool giving ``ceil(i / stride)`` outputs (:func:`pool_layer_for` a padding mode);
``norm_layer(num_channels)``
    a normalisation over ``num_channels`` channels (:func:`norm_layer_for`: ``nn.BatchNorm2d`` with eps/momentum);
``act_layer()``
    a fresh activation module (:func:`act_layer_for` a name: ``nn.SiLU``, ``nn.ReLU6``, ``nn.ReLU``, in place).

Any callable with those signatures works (``lambda c: nn.GroupNorm(8, c)``, ``nn.GELU``, a conv subclass).

Padding modes
-------------
``"symmetric"``: ordinary PyTorch padding ``k // 2`` on every side (PyTorch-native checkpoints).
``"same"``: TensorFlow's 'SAME' rule, which TF-trained checkpoints need to reproduce their outputs exactly.
For stride 1 it equals symmetric padding; for stride 2 the total padding
``max((ceil(i / s) - 1) * s + k - i, 0)`` depends on the input size and puts the odd pixel at the
bottom/right, so it is computed at run time. Both modes give outputs of ``ceil(i / s)`` pixels.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

# the layer factories' types (see the module docstring for how each is called)
ConvLayer = Callable[..., nn.Module]
PoolLayer = Callable[[int, int], nn.Module]
NormLayer = Callable[[int], nn.Module]
ActLayer = Callable[[], nn.Module]

PADDING_MODES = ("symmetric", "same")
ACTIVATIONS: dict[str, ActLayer] = {
    "swish": functools.partial(nn.SiLU, inplace=True),
    "silu": functools.partial(nn.SiLU, inplace=True),
    "relu6": functools.partial(nn.ReLU6, inplace=True),
    "relu": functools.partial(nn.ReLU, inplace=True),
}


def act_layer_for(name: str) -> ActLayer:
    """The activation factory of a name (``swish``/``silu``, ``relu6``, ``relu``): called with no argument, it
    returns a fresh in-place activation module."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}") from None


def make_activation(name: str) -> nn.Module:
    """Return a fresh activation module by name (``swish``/``silu``, ``relu6``, ``relu``)."""
    return act_layer_for(name)()


def norm_layer_for(eps: float, momentum: float) -> NormLayer:
    """The batch-norm factory ``norm_layer(num_channels)`` with PyTorch's momentum convention (TF's decay 0.99 is
    momentum 0.01 here)."""
    return functools.partial(nn.BatchNorm2d, eps=eps, momentum=momentum)


def conv_layer_for(padding: str) -> ConvLayer:
    """The convolution factory of a padding mode: ``conv_layer(in_channels, out_channels, kernel_size, stride=1,
    groups=1, bias=False)`` is :func:`make_conv2d` in that mode."""
    return functools.partial(make_conv2d, padding=check_padding(padding))


def pool_layer_for(padding: str) -> PoolLayer:
    """The max-pool factory of a padding mode: ``pool_layer(kernel_size, stride)`` is :func:`make_max_pool`."""
    return functools.partial(make_max_pool, padding=check_padding(padding))


def check_padding(padding: str) -> str:
    if padding not in PADDING_MODES:
        raise ValueError(f"unknown padding mode {padding!r}; valid: {list(PADDING_MODES)}")
    return padding


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TF 'SAME' padding (before, after) for one spatial dimension of ``size`` pixels."""
    total = max((math.ceil(size / stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: int, stride: int, dilation: int = 1, value: float = 0.0) -> torch.Tensor:
    """Pad ``x`` [B, C, H, W] so that a ``kernel``/``stride`` window gives ``ceil(H / stride)`` outputs."""
    top, bottom = same_padding(x.shape[-2], kernel, stride, dilation)
    left, right = same_padding(x.shape[-1], kernel, stride, dilation)
    if top or bottom or left or right:
        x = F.pad(x, (left, right, top, bottom), value=value)
    return x


class Conv2dSame(nn.Conv2d):
    """``nn.Conv2d`` with TF 'SAME' padding computed from the input size (used where stride > 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size[0], self.stride[0], self.dilation[0])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MaxPool2dSame(nn.MaxPool2d):
    """3×3/2 style max-pool with TF 'SAME' padding (padded with −inf, so padding never wins)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pad_same(x, self.kernel_size, self.stride, value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride, 0, 1, self.ceil_mode)


def make_conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    groups: int = 1,
    bias: bool = False,
    padding: str = "symmetric",
) -> nn.Conv2d:
    """A 2-D convolution in the given padding mode (dynamic padding only where 'same' needs it)."""
    check_padding(padding)
    if padding == "same" and stride > 1:
        return Conv2dSame(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=bias)
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, groups=groups, bias=bias)


def make_max_pool(kernel_size: int, stride: int, padding: str = "symmetric") -> nn.Module:
    """Max-pool giving ``ceil(i / stride)`` outputs in either padding mode."""
    check_padding(padding)
    if padding == "same":
        return MaxPool2dSame(kernel_size, stride)
    return nn.MaxPool2d(kernel_size, stride, padding=(kernel_size - 1) // 2)


class ConvBnAct(nn.Sequential):
    """conv → norm → optional activation. Shapes: [B, Cin, H, W] → [B, Cout, ⌈H/s⌉, ⌈W/s⌉].

    The layers come from the factories (module docstring): ``conv_layer(in_channels, out_channels, kernel_size,
    stride, groups=groups, bias=bias)``, ``norm_layer(out_channels)``, ``act_layer()`` (``None``: no activation).
    """

    conv_bn_pair = ("conv", "bn")  # see fuse_batchnorm

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        groups: int = 1,
        *,
        conv_layer: ConvLayer,
        norm_layer: NormLayer,
        act_layer: Optional[ActLayer] = None,
        bias: bool = False,
    ):
        super().__init__()
        self.conv = conv_layer(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)
        self.bn = norm_layer(out_channels)
        if act_layer is not None:
            self.act = act_layer()


class SeparableConv2d(nn.Module):
    """Depthwise k×k conv then pointwise 1×1 conv, optionally followed by a norm.

    ``conv_layer`` makes both convs (``conv_layer(in_channels, in_channels, kernel_size, 1, groups=in_channels,
    bias=False)``, then ``conv_layer(in_channels, out_channels, 1, bias=pointwise_bias)``); ``norm_layer(out_channels)``
    the norm (``None``: no norm, ``self.bn`` is None). ``pointwise_bias`` reproduces TF-ported checkpoints, which
    carry a bias before the batch norm. Shapes: [B, Cin, H, W] → [B, Cout, H, W].
    """

    conv_bn_pair = ("pointwise", "bn")  # see fuse_batchnorm

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        *,
        conv_layer: ConvLayer,
        norm_layer: Optional[NormLayer] = None,
        pointwise_bias: bool = False,
    ):
        super().__init__()
        self.depthwise = conv_layer(in_channels, in_channels, kernel_size, 1, groups=in_channels, bias=False)
        self.pointwise = conv_layer(in_channels, out_channels, 1, bias=pointwise_bias)
        self.bn = norm_layer(out_channels) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pointwise(self.depthwise(x))
        if self.bn is not None:
            x = self.bn(x)
        return x


def fuse_batchnorm(module: nn.Module) -> nn.Module:
    """Fold batch norms into the convolutions before them, in place, for inference.

    Every submodule that declares ``conv_bn_pair = (conv attribute, bn attribute)`` gets its conv replaced by
    one whose weights and bias include the BN's (running) statistics and its BN by ``nn.Identity``. Outputs are
    unchanged up to float rounding; BNs without a conv of their own (e.g. the heads' per-level BNs after a
    shared conv) stay. The module must be in eval mode; it cannot be trained afterwards.
    """
    if module.training:
        raise RuntimeError("fuse_batchnorm needs a module in eval mode (call .eval() first)")
    for m in list(module.modules()):
        pair = getattr(m, "conv_bn_pair", None)
        if pair is None or not isinstance(getattr(m, pair[1], None), nn.BatchNorm2d):
            continue
        conv_name, bn_name = pair
        setattr(m, conv_name, fuse_conv_bn_eval(getattr(m, conv_name), getattr(m, bn_name)))
        setattr(m, bn_name, nn.Identity())
    return module


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample with probability ``rate`` in training."""

    def __init__(self, rate: float = 0.0):
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


def round_channels(channels: float, multiplier: float = 1.0, divisor: int = 8) -> int:
    """Scale a channel count by ``multiplier`` and round to a multiple of ``divisor`` (never losing >10%)."""
    scaled = channels * multiplier
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)
