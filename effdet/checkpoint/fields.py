"""Our own checkpoint entries: the ONE definition that training writes and the Predictor, eval and export read.

Lightning ``.ckpt`` (written by ``effdet.engine.module.DetectionModule.on_save_checkpoint``)::

    state_dict["model.*"]           the detector; with EMA also state_dict["ema.module.*"] (preferred on load)
    effdet_model_config             plain dict of ModelConfig fields
    class_names, category_ids       lists (or None)
    effdet_train_config             the resolved training config (plain dict)
    effdet_format                   "effdet-lightning/<version>"

Plain export (``save_weights`` / ``tools/convert_weights.py``)::

    {"format": "effdet-weights", "format_version": <version>, "model_config": {...}, "state_dict": {...},
     "class_names": [...] | None, "category_ids": [...] | None, "source": {...}}

A file whose version is newer than :data:`FORMAT_VERSION` fails with :class:`UnsupportedFormatVersionError`
naming the file and the version; files without a tag are version 1.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from backbones.efficientnet import EfficientNet

from ..modeling.variants import ModelConfig
from ..modeling.model import EfficientDet
from ..types import PathLike
from .formats import StateDict, UnknownCheckpointFormatError, infer_backbone
from .io import write_checkpoint

FORMAT_VERSION = 1  # the newest version of our entries this code reads and the one it writes
EXPORT_FORMAT_TAG = "effdet-weights"
EXPORT_FORMAT_VERSION = FORMAT_VERSION
EXPORT_VERSION_KEY = "format_version"
LIGHTNING_FORMAT_TAG = "effdet-lightning"
LIGHTNING_FORMAT_KEY = "effdet_format"
LIGHTNING_CONFIG_KEY = "effdet_model_config"
LIGHTNING_EMA_KEY = "ema_state_dict"
LIGHTNING_MODEL_PREFIX = "model."
LIGHTNING_EMA_PREFIX = "ema.module."
TRAIN_CONFIG_KEY = "effdet_train_config"

logger = logging.getLogger("effdet.checkpoint")


class UnsupportedFormatVersionError(ValueError):
    """A checkpoint written by a newer effdet (its format version is above :data:`FORMAT_VERSION`)."""


def format_version(obj: Mapping[str, Any], origin: str) -> int:
    """The version of our entries in ``obj`` (1 when untagged); raises :class:`UnsupportedFormatVersionError`
    for a version this code does not know."""
    version: Any = 1
    if LIGHTNING_FORMAT_KEY in obj:
        tag = str(obj[LIGHTNING_FORMAT_KEY])
        name, _, version = tag.partition("/")
        if name != LIGHTNING_FORMAT_TAG:
            raise UnknownCheckpointFormatError(f"'{origin}': unknown format tag {tag!r} (expected "
                                               f"'{LIGHTNING_FORMAT_TAG}/<version>')")
    elif EXPORT_VERSION_KEY in obj:
        version = obj[EXPORT_VERSION_KEY]
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise UnsupportedFormatVersionError(f"'{origin}': unreadable checkpoint format version {version!r}") from None
    if not 1 <= number <= FORMAT_VERSION:
        raise UnsupportedFormatVersionError(
            f"'{origin}' has checkpoint format version {number}, but this effdet reads versions 1..{FORMAT_VERSION}: "
            "it was written by a newer effdet; upgrade effdet (pip install -U effdet-lightning) to read it")
    return number


def is_tensor_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and any(isinstance(v, torch.Tensor) for v in value.values())


def _with_prefix(state: Mapping[str, Any], prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)}


def lightning_detector_state(obj: Mapping[str, Any], origin: str) -> tuple[StateDict, bool]:
    """Detector weights of our Lightning checkpoint, EMA first: ``ema_state_dict``, then the ``state_dict`` keys
    ``ema.module.*`` (an ``AveragedModel`` attribute ``ema``), then ``model.*``. Returns (state, used_ema)."""
    full = dict(obj.get("state_dict") or {})
    candidates = [
        (f"'{LIGHTNING_EMA_KEY}'", dict(obj[LIGHTNING_EMA_KEY]) if is_tensor_dict(obj.get(LIGHTNING_EMA_KEY)) else {}),
        (f"state_dict['{LIGHTNING_EMA_PREFIX}*']", _with_prefix(full, LIGHTNING_EMA_PREFIX)),
        (f"state_dict['{LIGHTNING_MODEL_PREFIX}*']", _with_prefix(full, LIGHTNING_MODEL_PREFIX)),
    ]
    for index, (where, state) in enumerate(candidates):
        if state:
            if index < 2:
                logger.info("using the EMA weights (%s) of %s", where, origin)
            return state, index < 2
    raise UnknownCheckpointFormatError(
        f"'{origin}' has '{LIGHTNING_CONFIG_KEY}' but no detector weights ('{LIGHTNING_EMA_KEY}', or 'state_dict' keys "
        f"'{LIGHTNING_EMA_PREFIX}*' / '{LIGHTNING_MODEL_PREFIX}*')")


def export_dict(model: nn.Module, class_names: Optional[Sequence[str]] = None,
                category_ids: Optional[Sequence[int]] = None, source: Optional[Mapping[str, Any]] = None
                ) -> dict[str, Any]:
    """Our plain export format (loadable with ``weights_only=True``).

    Detector: ``{"format": "effdet-weights", "format_version": 1, "model_config": {...}, "state_dict": {...},
    "class_names": [...] | None, "category_ids": [...] | None, "source": {...}}``.
    Backbone: ``{"format": ..., "backbone": name, "state_dict": {...}}``.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    result: dict[str, Any] = {"format": EXPORT_FORMAT_TAG, "format_version": FORMAT_VERSION}
    if isinstance(model, EfficientDet):
        result.update(model_config=model.config.to_dict(), state_dict=state,
                      class_names=None if class_names is None else [str(n) for n in class_names],
                      category_ids=None if category_ids is None else [int(i) for i in category_ids])
    elif isinstance(model, EfficientNet):
        result.update(backbone=infer_backbone(state), state_dict=state)
    else:
        raise TypeError(f"cannot export a {type(model).__name__}")
    if source:
        result["source"] = dict(source)
    return result


def save_weights(model: nn.Module, path: PathLike, class_names: Optional[Sequence[str]] = None,
                 category_ids: Optional[Sequence[int]] = None, source: Optional[Mapping[str, Any]] = None) -> Path:
    """Write :func:`export_dict` to ``path`` (``torch.save``, or safetensors + JSON metadata for ``.safetensors``)."""
    return write_checkpoint(path, export_dict(model, class_names, category_ids, source))


def lightning_checkpoint_fields(config: Union[ModelConfig, Mapping[str, Any]], class_names: Optional[Sequence[str]],
                                category_ids: Optional[Sequence[int]],
                                ema_state_dict: Optional[Mapping[str, torch.Tensor]] = None,
                                train_config: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The extra entries our Lightning checkpoints carry (call from ``on_save_checkpoint``: ``ckpt.update(...)``).

    ``effdet_model_config``: plain dict of ModelConfig fields; ``class_names``/``category_ids``: lists;
    ``ema_state_dict``: the EMA detector's state dict with bare detector keys (no prefix), when EMA is used and
    not already in ``state_dict`` as ``ema.module.*`` (an ``AveragedModel`` attribute ``ema`` of the
    LightningModule). The detector itself must be the LightningModule attribute ``model`` (``model.*`` keys).
    Everything is plain data so the checkpoint loads with ``weights_only=True`` (keep OmegaConf objects out of
    ``hyper_parameters``: store ``OmegaConf.to_container(cfg)``). ``effdet_train_config``: the resolved
    training config as a plain dict (``train_config``); ``effdet_format``: ``"effdet-lightning/<version>"``.
    """
    fields = config.to_dict() if isinstance(config, ModelConfig) else dict(config)
    extras: dict[str, Any] = {
        LIGHTNING_CONFIG_KEY: fields,
        "class_names": None if class_names is None else [str(n) for n in class_names],
        "category_ids": None if category_ids is None else [int(i) for i in category_ids],
    }
    if train_config is not None:
        extras[TRAIN_CONFIG_KEY] = dict(train_config)
    extras[LIGHTNING_FORMAT_KEY] = f"{LIGHTNING_FORMAT_TAG}/{FORMAT_VERSION}"
    if ema_state_dict is not None:
        extras[LIGHTNING_EMA_KEY] = {k: v.detach().clone() for k, v in ema_state_dict.items()}
    return extras


__all__ = [
    "EXPORT_FORMAT_TAG", "FORMAT_VERSION", "LIGHTNING_CONFIG_KEY", "LIGHTNING_EMA_KEY", "LIGHTNING_EMA_PREFIX",
    "LIGHTNING_FORMAT_KEY", "LIGHTNING_MODEL_PREFIX", "TRAIN_CONFIG_KEY", "UnsupportedFormatVersionError",
    "export_dict", "format_version", "is_tensor_dict", "lightning_checkpoint_fields", "lightning_detector_state",
    "save_weights",
]
