"""TF 'SAME' padding frozen at the export size: run-time pads (``Conv2dSame``, ``MaxPool2dSame``) replaced by the
static pads they compute for one input size, so the exported graph has no shape arithmetic; and the eval-mode,
batch-norm-folded copy of a model that the exporter traces."""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones.layers import Conv2dSame, MaxPool2dSame, fuse_batchnorm, same_padding

__all__ = ["freeze_same_padding", "prepare_for_export"]


class _StaticPadConv2d(nn.Conv2d):
    """``nn.Conv2d`` preceded by a fixed (left, right, top, bottom) zero pad: TF 'SAME' frozen at one size."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                         conv.groups, conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        self.weight, self.bias = conv.weight, conv.bias
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        return self._conv_forward(x, self.weight, self.bias)


class _StaticPadMaxPool2d(nn.Module):
    """Max-pool preceded by a fixed −inf pad (TF 'SAME' frozen at one size)."""

    def __init__(self, kernel_size: int, stride: int, pads: tuple[int, int, int, int]):
        super().__init__()
        self.kernel_size, self.stride, self.pads = kernel_size, stride, pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads, value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


def _pads(size: Sequence[int], kernel: int, stride: int, dilation: int = 1) -> tuple[int, int, int, int]:
    top, bottom = same_padding(int(size[0]), kernel, stride, dilation)
    left, right = same_padding(int(size[1]), kernel, stride, dilation)
    return left, right, top, bottom


def freeze_same_padding(model: nn.Module, image_size: Sequence[int]) -> nn.Module:
    """Replace every run-time TF 'SAME' pad (``Conv2dSame``, ``MaxPool2dSame``) by the static pads it computes
    for an input of ``image_size`` (h, w), in place. The model then only runs at that input size (any batch).

    The input size of each such layer is found by one forward pass with hooks.
    """
    dynamic = [m for m in model.modules() if isinstance(m, (Conv2dSame, MaxPool2dSame))]
    if not dynamic:
        return model
    seen: dict[int, tuple[int, int]] = {}

    def record(module: nn.Module, args: tuple) -> None:
        seen.setdefault(id(module), tuple(args[0].shape[-2:]))

    hooks = [m.register_forward_pre_hook(record) for m in dynamic]
    parameter = next(model.parameters())
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *image_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        for hook in hooks:
            hook.remove()
    replacements = {}
    for module in dynamic:
        size = seen[id(module)]
        if isinstance(module, Conv2dSame):
            pads = _pads(size, module.kernel_size[0], module.stride[0], module.dilation[0])
            replacements[id(module)] = _StaticPadConv2d(module, pads)
        else:
            replacements[id(module)] = _StaticPadMaxPool2d(module.kernel_size, module.stride,
                                                           _pads(size, module.kernel_size, module.stride))
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in replacements:
                setattr(parent, name, replacements[id(child)])
    return model


def prepare_for_export(model: nn.Module, image_size: Sequence[int], fold_bn: bool = True) -> nn.Module:
    """An eval-mode copy of ``model`` ready to trace at ``image_size``: BN folded (``fold_bn``), static
    'SAME' pads, contiguous memory format. The caller's model is untouched."""
    model = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    if fold_bn:
        fuse_batchnorm(model)
    freeze_same_padding(model, image_size)
    return model
