"""Build detectors by name: ``create_model``, ``list_models`` and the name/alias resolution.

The network itself is :class:`effdet.modeling.model.EfficientDet` (modules only); the variant table is
:mod:`effdet.modeling.variants`; checkpoints are read by :mod:`effdet.checkpoint`.
"""
from __future__ import annotations

from typing import Any, Optional

from ..checkpoint.load import config_for_checkpoint, load_weights, read_weights
from .layers import LayerFactories
from .variants import list_models, model_config
from .model import EfficientDet


def create_model(
    name_or_phi: str | int | None = None,
    num_classes: Optional[int] = None,
    weights: Any = None,
    *,
    reset_class_head: bool = False,
    trust_checkpoint: bool = False,
    layers: Optional[LayerFactories] = None,
    backbone_layers: Optional[LayerFactories] = None,
    **overrides: Any,
) -> EfficientDet:
    """Build an EfficientDet variant by name (see :func:`list_models`) or by φ (0–7 → D0–D7).

    Any :class:`~effdet.modeling.variants.ModelConfig` field can be overridden (``image_size``, ``fpn_channels``,
    ``max_level``, ``padding``, ``act`` …). The reference package's names (``tf_efficientdet_d0`` …) are
    accepted as aliases that select the settings of its TF-ported checkpoints. Without ``weights`` the
    defaults are ``efficientdet_d0`` and 90 classes.

    ``weights`` (a path, a loaded checkpoint or an ``effdet.checkpoint.CheckpointInfo``) builds the model the
    checkpoint needs and loads it: the name may be left out (the variant, class count, fusion, conv biases,
    padding and BN settings then come from the checkpoint, see ``effdet.checkpoint``); a given name must have
    the checkpoint's sizes. ``num_classes`` different from the checkpoint's needs ``reset_class_head=True``
    (the class head is then re-initialised, everything else loaded). ``trust_checkpoint`` allows files that
    need full unpickling (they can run code).

    ``layers`` / ``backbone_layers`` (:class:`~effdet.modeling.layers.LayerFactories`) build the BiFPN and heads /
    the backbone with other layer factories than the ones the config's settings give (padding, BN, activation).
    """
    if weights is None:
        config = model_config("efficientdet_d0" if name_or_phi is None else name_or_phi,
                              num_classes=90 if num_classes is None else num_classes, **overrides)
        return EfficientDet(config, layers, backbone_layers)
    info = read_weights(weights, trust=trust_checkpoint)
    config = config_for_checkpoint(info, name_or_phi, num_classes=num_classes, **overrides)
    model = EfficientDet(config, layers, backbone_layers)
    load_weights(model, info, reset_class_head=reset_class_head)
    return model


__all__ = ["create_model", "list_models"]
