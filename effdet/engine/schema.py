"""The training configuration: one OmegaConf schema for YAML files merged with ``section.key=value`` overrides,
its choices (from :mod:`effdet.choices`), validation (unknown keys, choices, ``trainer.*`` arguments) and the
resolution of the ``model:`` section into a :class:`~effdet.modeling.variants.ModelConfig`.

Every command reads its overrides with one parser, :func:`split_overrides` (the grammar is the schema's keys:
``eval.nms=hard``, ``trainer.max_epochs=3``, ``seed=1``); the commands that run a trained model take the ``eval``
section's post-processing keys (:func:`postprocess_options`).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from ..choices import (ANCHOR_FIT_MODES, AUTO, BOX_LOSSES, COCO_EVALUATORS, DATA_FORMATS, EXIF_ORIENTATION_MODES,
                       LR_SCHEDULES, MERGE_METHODS, MERGE_METRICS, NMS_METHODS, OPTIMIZERS, PRECISION_ALIASES, SYNC_BATCHNORM_BELOW, TRAIN_RESIZE_MODES, TRAINING_PRECISIONS)
from ..deprecation import deprecated_form
from ..modeling.postprocess_settings import PostprocessSettings, postprocess_setting_names, settings_problems
from ..modeling.variants import ModelConfig, model_config
from ..pretrained_settings import HUB_BACKBONES, unavailable_backbone_message


# Keys of the `model:` section besides the ModelConfig fields (which are all optional overrides there).
MODEL_SECTION_EXTRA = ("phi", "scaling", "weights", "pretrained_backbone", "reset_class_head", "trust_checkpoint")


def _model_section_class():
    """`model:` section: ``name``/``phi`` select the variant; every ModelConfig field may override it.

    Generated from :class:`ModelConfig` so that a new model field is a valid config key at once.
    ``None`` means "the variant's value" (for ``num_classes``: the dataset's number of categories).
    """
    fields = [("name", str, field(default="efficientdet_d0"))]
    for f in dataclasses.fields(ModelConfig):
        if f.name != "name":
            fields.append((f.name, Optional[Any], field(default=None)))
    fields += [
        ("phi", Optional[float], field(default=None)),  # any φ, in the family of `name` (effdet.modeling.scaling)
        ("scaling", Optional[dict[str, float]], field(default=None)),  # {alpha, beta, gamma}: searched coefficients
        ("weights", Optional[str], field(default=None)),  # checkpoint to start from (any supported format)
        ("pretrained_backbone", Optional[str], field(default=None)),  # e.g. efficientnet_lite0 or a path
        ("reset_class_head", bool, field(default=False)),  # re-initialise the class net if classes differ
        ("trust_checkpoint", bool, field(default=False)),  # allow checkpoints that need full unpickling
    ]
    section = dataclasses.make_dataclass("ModelSection", fields)
    section.__module__ = __name__  # so that configs pickle (ddp_spawn sends them to its processes)
    return section


ModelSection = _model_section_class()


@dataclass
class DataSplit:
    images: str = "???"  # images folder (relative paths resolve against data.root)
    # COCO instances JSON (voc: XML folder, VOC root or split list; yolo: labels folder, or null: the images ->
    # labels rule of YOLO tools, effdet.data.yolo.label_path_for)
    annotations: Optional[str] = "???"


@dataclass
class DataConfig:
    root: Optional[str] = None  # base folder of relative split paths
    train: DataSplit = field(default_factory=lambda: DataSplit("train2017", "annotations/instances_train2017.json"))
    val: DataSplit = field(default_factory=lambda: DataSplit("val2017", "annotations/instances_val2017.json"))
    batch_size: int = 8  # per device
    val_batch_size: Optional[int] = None  # default: batch_size
    num_workers: int = 4
    scale_range: list[float] = field(default_factory=lambda: [0.1, 2.0])  # paper's scale jitter
    hflip: float = 0.5
    crop_min_visible: float = 0.2  # the crop keeps a clipped box with this share visible (0: any with area, as TF)
    train_resize: str = "area"  # training crop's resampling: area (as inference) | random_filtered (effdet/choices.py)
    check_files: bool = True  # skip annotation entries whose image file is missing (counted)
    format: str = "coco"  # coco | voc | yolo (converted in memory; see effdet/data/formats.py)
    classes: Optional[Any] = None  # class names: a list, or a classes.txt / data.yaml path (voc, yolo)
    allow_outside_images: bool = False  # accept file_name values that are absolute or leave the images folder
    max_image_pixels: Optional[int] = None  # decompression-bomb limit (null: 178956970 or $EFFDET_MAX_IMAGE_PIXELS)
    # EXIF orientation: apply (images used as displayed, as annotation tools and OpenCV's default reading show them:
    # loading, the YOLO/VOC importers' sizes, the data checks, inference) | ignore (the stored pixels, as annotated)
    exif_orientation: str = "apply"
    # start-up anchor check on the training boxes (effdet/engine/anchor_fit.py): report (log the best possible recall;
    # warn, suggest anchor_scale/aspect_ratios when boxes fall outside the anchors) | apply (train with it) | off
    anchor_fit: str = "report"
    tile_size: Optional[int] = None  # tiled training (effdet/data/tiles.py): tile side in source px; null: off
    tile_overlap: float = 0.2  # fraction of tile_size that neighbouring tiles share, in [0, 1)
    tile_min_visible: float = 0.5  # a box cut by a tile's edge is kept (clipped) when this share of its area is inside
    tile_empty_fraction: float = 0.1  # share of the tiles without any box that each epoch keeps, in [0, 1]


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd | adamw
    lr: float = 0.08  # learning rate for a global batch of `lr_batch_size` images
    lr_batch_size: Optional[int] = 64  # scale lr linearly to the real global batch; null: use lr as is
    momentum: float = 0.9
    weight_decay: float = 4e-5  # not applied to batch-norm weights and biases
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adamw
    warmup_epochs: float = 1.0
    warmup_start_factor: float = 0.1  # lr starts at factor * lr (paper: 0.008 for 0.08)
    schedule: str = "cosine"  # cosine | constant
    min_lr_factor: float = 0.0  # cosine ends at factor * lr
    grad_clip: Optional[float] = 10.0  # gradient-norm clipping (Lightning's gradient_clip_val)
    ema_decay: Optional[float] = 0.9998  # EMA of weights; null disables. Warm-up: min(decay, (1+t)/(ema_warmup+t))
    ema_warmup: float = 10.0  # > 1; TF's 10: after t steps the EMA spans their last ~1/(ema_warmup-1) (engine/ema.py)
    freeze_bn: bool = False  # keep batch-norm statistics and affine parameters fixed (small batches)


@dataclass
class LossConfig:
    alpha: float = 0.25
    gamma: float = 1.5
    delta: float = 0.1  # huber
    box_loss_weight: Optional[float] = None  # null: 50 for huber, 1 for giou
    box_loss: str = "huber"  # huber | giou
    label_smoothing: float = 0.0
    match_threshold: float = 0.5  # anchors with IoU >= this are positives
    # IoU < this: background; in between: ignored. 0.5 = no ignore band: the paper's/official matcher (and the
    # reference's). Measured against a 0.4 band (docs/convergence.md, one seed each): final AP +0.010 on shapes,
    # -0.019 on small objects; mid-training +24% / -7%. No clear winner, so the paper's choice.
    unmatched_threshold: float = 0.5


@dataclass
class EvalConfig(PostprocessSettings):
    """``eval:`` section: every post-processing setting, inherited from
    :class:`~effdet.modeling.postprocess_settings.PostprocessSettings` (where they, their defaults and their rules
    are defined once: a new setting is a config key at once), plus the keys of training's validation."""

    every_n_epochs: int = 1
    coco_eval: str = "pycocotools"  # COCO evaluator: pycocotools | faster_coco_eval (was eval.backend)
    plots: bool = True  # final validation: PR curves, confusion matrix, error breakdown, gallery (effdet/evaluation/analysis/__init__.py)
    gallery: int = 8  # images with the most errors drawn by `plots`


@dataclass
class CheckpointConfig:
    # Also write checkpoints/last.ckpt every this many optimiser steps (0: only at the end of each epoch), so
    # a killed run loses at most that many steps. SIGTERM always writes it before the process exits.
    every_n_steps: int = 0


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)  # type: ignore[valid-type]
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # Handed to lightning.Trainer (max_epochs, precision, devices, strategy, ...); keys checked against its signature
    trainer: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 300})
    output_dir: str = "runs/exp"
    seed: int = 0
    resume: bool = True  # continue from output_dir/checkpoints/last.ckpt when it exists
    channels_last: bool = True  # NHWC activations: faster convolutions on CPU (~1.2x training) and tensor cores
    # torch.compile the network (the trained model and its EMA copy, in place: checkpoint keys do not change). A run
    # option, not a model setting: it never enters the model config, checkpoints' model section or ONNX metadata.
    compile: bool = False


class ConfigError(ValueError):
    """A configuration problem found before anything heavy starts; the message names the key."""


CHOICES: dict[str, tuple[str, ...]] = {
    "optim.name": OPTIMIZERS,
    "optim.schedule": LR_SCHEDULES,
    "loss.box_loss": BOX_LOSSES,
    "eval.nms": NMS_METHODS,
    "eval.merge": MERGE_METHODS,
    "eval.merge_metric": MERGE_METRICS,
    "eval.coco_eval": COCO_EVALUATORS,
    "data.format": DATA_FORMATS,
    "data.anchor_fit": ANCHOR_FIT_MODES,
    "data.exif_orientation": EXIF_ORIENTATION_MODES,
    "data.train_resize": TRAIN_RESIZE_MODES,
}


# Keys renamed in this release: old key -> new key. The old key still works for one release, with a FutureWarning.
RENAMED_KEYS: dict[str, str] = {"eval.backend": "eval.coco_eval"}


def _move_renamed_keys(layer: Any, where: str) -> None:
    """Move each old key of :data:`RENAMED_KEYS` set in one config layer (a YAML file or the command line) to its
    new name, warning that it is deprecated; both names in the same layer is an error."""
    import warnings

    from omegaconf import OmegaConf

    for old, new in RENAMED_KEYS.items():
        section, _, name = old.rpartition(".")
        node = OmegaConf.select(layer, section) if section else layer
        if not OmegaConf.is_dict(node) or name not in node:
            continue
        if OmegaConf.select(layer, new) is not None:
            raise ConfigError(f"config keys '{old}' (deprecated) and '{new}' are both set (from {where}); "
                              f"keep only '{new}'")
        value = node.pop(name)
        warnings.warn(f"config key '{old}' is deprecated and will be removed in the next release: use '{new}' "
                      f"(from {where})", FutureWarning, stacklevel=3)
        OmegaConf.update(layer, new, value, force_add=True)


def _valid_keys(schema: Any, dotted: str) -> list[str]:
    from omegaconf import OmegaConf

    node = schema
    for part in [p for p in dotted.split(".")[:-1] if p]:
        node = node[part] if part in node else None
        if node is None or not OmegaConf.is_dict(node):
            return []
    return sorted(str(k) for k in node.keys())


def trainer_arguments() -> list[str]:
    """Keyword arguments ``lightning.Trainer`` accepts (the valid ``trainer.*`` keys)."""
    import inspect

    import lightning

    params = inspect.signature(lightning.Trainer.__init__).parameters
    return sorted(name for name in params if name != "self")


def load_train_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Any:
    """Read a YAML config, merge ``key=value`` overrides, validate, and return an OmegaConf DictConfig.

    Fails with :class:`ConfigError` naming the file/key and the valid choices for: a missing file, bad
    YAML, an unknown key (with a close-match suggestion), a wrong type, an invalid choice, unknown
    ``trainer.*`` arguments, a model name/override the variant table rejects, missing data paths.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

    schema = OmegaConf.structured(TrainConfig)
    layers = []
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file '{path}' does not exist")
        try:
            layers.append(OmegaConf.load(path))
        except Exception as error:  # yaml.YAMLError and friends
            raise ConfigError(f"config file '{path}' is not valid YAML: {error}") from None
    parsed, others = split_overrides(overrides)
    unknown = [item for item in others if "=" in item and _DOTTED_KEY.fullmatch(str(item).partition("=")[0].strip())]
    if unknown:  # key=value whose first part is no top-level key: name the valid ones, as a merge error does
        raise ConfigError(f"unknown config key(s) {[item.partition('=')[0].strip() for item in unknown]} (from command "
                          f"line); valid top-level keys: {list(config_keys())}")
    if others:
        raise ConfigError(f"command-line overrides must look like section.key=value, got {others}")
    layers.append(OmegaConf.from_dotlist([str(override) for override in parsed]))
    source = path or "command line"
    cfg = schema
    for layer, where in zip(layers, [source] * (len(layers) - 1) + ["command line"]):
        _move_renamed_keys(layer, where)
        try:
            cfg = OmegaConf.merge(cfg, layer)
        except ConfigKeyError as error:
            key = getattr(error, "full_key", None) or str(error)
            valid = _valid_keys(schema, str(key))
            raise ConfigError(f"unknown config key '{key}' (from {where}); valid keys there: {valid}. "
                              f"{str(error).splitlines()[0]}") from None
        except OmegaConfBaseException as error:
            key = getattr(error, "full_key", "?")
            raise ConfigError(f"bad value for config key '{key}' (from {where}): {str(error).splitlines()[0]}") \
                from None
    _validate(cfg)
    return cfg


def _validate(cfg: Any) -> None:
    from omegaconf import OmegaConf

    for key, choices in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value == "False" and "off" in choices:  # YAML 1.1 reads a bare `off` (file or command line) as false
            OmegaConf.update(cfg, key, "off")
            value = "off"
        if value not in choices:
            raise ConfigError(f"config key '{key}' is {value!r}; valid choices: {list(choices)}")
    unknown = sorted(set(cfg.trainer.keys()) - set(trainer_arguments()))
    if unknown:
        raise ConfigError(f"unknown trainer argument(s) {unknown} in 'trainer'; valid: {trainer_arguments()}")
    if str(cfg.trainer.get("sync_batchnorm")) not in ("None", "True", "False", AUTO):
        raise ConfigError(f"config key 'trainer.sync_batchnorm' is {cfg.trainer.sync_batchnorm!r}; valid: true, false, "
                          f"{AUTO!r} (on when data.batch_size, the per-device batch, is below {SYNC_BATCHNORM_BELOW})")
    if cfg.trainer.get("precision") is not None and str(cfg.trainer.precision) != AUTO:
        given = str(cfg.trainer.precision)
        precision = PRECISION_ALIASES.get(given, given)
        if precision not in TRAINING_PRECISIONS:
            raise ConfigError(
                f"config key 'trainer.precision' is {given!r}; valid choices: {list(TRAINING_PRECISIONS)}, {AUTO!r} "
                f"(bf16-mixed where the accelerator supports it, else 16-mixed on CUDA, else 32-true) (aliases "
                f"{PRECISION_ALIASES}). Half-precision weights ('bf16-true', '16-true') would freeze the EMA: a "
                f"0.9998 update is below their resolution; the mixed forms train in half precision with float32 "
                f"weights")
        cfg.trainer.precision = precision
    for split in ("train", "val"):
        for part in ("images", "annotations"):
            if OmegaConf.is_missing(cfg.data[split], part):
                raise ConfigError(f"config key 'data.{split}.{part}' is required (a path, relative to data.root)")
            if cfg.data[split][part] is None and not (part == "annotations" and cfg.data.format == "yolo"):
                raise ConfigError(f"config key 'data.{split}.{part}' is null: it needs a path (relative to data.root); "
                                  f"only data.format=yolo takes annotations=null (labels found by the images -> "
                                  f"labels rule)")
    backbone = cfg.model.get("pretrained_backbone")
    if backbone in HUB_BACKBONES and not cfg.model.get("weights"):
        raise ConfigError(f"config key 'model.pretrained_backbone' {unavailable_backbone_message(backbone)}")
    from ..data.tiles import tile_problems  # (imports torch: only when a config is validated)
    for name, rule in tile_problems(cfg.data).items():
        raise ConfigError(f"config key 'data.{name}' {rule}")
    if cfg.data.tile_size is not None and cfg.eval.slice_size is None:
        cfg.eval.slice_size = cfg.data.tile_size  # validate whole images as a user will predict them: by slices
    for name, rule in settings_problems(cfg.eval).items():  # the settings' own rules (modeling.postprocess_settings)
        raise ConfigError(f"config key 'eval.{name}' {rule}")
    if cfg.optim.ema_warmup <= 1:
        raise ConfigError(f"config key 'optim.ema_warmup' must be > 1 (10: TF's EMA warm-up), got {cfg.optim.ema_warmup}")
    if cfg.data.batch_size < 1:
        raise ConfigError(f"config key 'data.batch_size' must be >= 1, got {cfg.data.batch_size}")
    if cfg.checkpoint.every_n_steps < 0:
        raise ConfigError(f"config key 'checkpoint.every_n_steps' must be >= 0 (0: once per epoch), "
                          f"got {cfg.checkpoint.every_n_steps}")
    try:
        resolve_model_config(cfg.model, num_classes=1)
    except ValueError as error:
        raise ConfigError(f"model section: {error}") from None


def model_overrides(section: Any) -> dict[str, Any]:
    """ModelConfig overrides set in a ``model:`` section (None = keep the variant's value)."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(section, resolve=True) if OmegaConf.is_config(section) else dict(section)
    return {k: v for k, v in plain.items()
            if v is not None and k not in MODEL_SECTION_EXTRA and k != "name"}


def resolve_model_config(section: Any, num_classes: Optional[int] = None) -> ModelConfig:
    """ModelConfig of a ``model:`` section; ``num_classes`` fills in when the section leaves it unset.

    Precedence: the variant's row < what ``pretrained_backbone``'s weights were trained with (TF-trained ImageNet
    weights: 'same' padding, BN eps 1e-3, see :mod:`effdet.pretrained_settings`) < keys set in the section.
    """
    from ..pretrained_settings import pretrained_backbone_settings

    overrides = model_overrides(section)
    if section["pretrained_backbone"] and not section["weights"]:
        overrides = {**pretrained_backbone_settings(section["pretrained_backbone"], section["trust_checkpoint"]),
                     **overrides}
    if overrides.get("num_classes") is None and num_classes is not None:
        overrides["num_classes"] = num_classes
    return model_config(section["name"], phi=section["phi"], scaling=section["scaling"], **overrides)


# ------------------------------------------------------------------------------------------ command-line overrides

logger = logging.getLogger(__name__)
_DOTTED_KEY = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


@dataclass(frozen=True)
class Override:
    """One command-line override: ``key`` dotted (``eval.nms``), ``value`` the text after ``=``."""

    key: str
    value: str

    def __str__(self) -> str:
        return f"{self.key}={self.value}"


def config_keys() -> tuple[str, ...]:
    """The top-level keys of the training config: its sections (``model``, ``eval`` ...) and scalars (``seed`` ...)."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig))


def split_overrides(arguments: Sequence[str], renamed: Mapping[str, str] | None = None
                    ) -> tuple[list[Override], list[str]]:
    """The one parser of command-line overrides, used by every command: ``(overrides, other arguments)``.

    An argument ``key=value`` whose key is a dotted key of the training config (its first part a section or a
    top-level key: ``eval.nms``, ``data.train.images``, ``seed``) is an override; any other argument is a source or a
    path and comes back unchanged, in order. Whether the rest of the key exists is checked where the override is
    applied (:func:`load_train_config`, :func:`postprocess_options`), so a typo is an error naming the valid keys
    rather than a file that is not found. ``renamed`` maps an old key to its dotted key (``{"nms": "eval.nms"}``):
    accepted for one release, with a deprecation message in the log.
    """
    renamed = renamed or {}
    sections = set(config_keys())
    overrides: list[Override] = []
    others: list[str] = []
    for argument in arguments:
        key, sep, value = str(argument).partition("=")
        key, value = key.strip(), value.strip()
        if sep and key in renamed:
            deprecated_form(f"'{argument}'", f"'{renamed[key]}={value}'")
            overrides.append(Override(renamed[key], value))
        elif sep and _DOTTED_KEY.fullmatch(key) and key.split(".")[0] in sections:
            overrides.append(Override(key, value))
        else:
            others.append(argument)
    return overrides, others


POSTPROCESS_SECTION = "eval"


def postprocess_options(arguments: Sequence[str], command: str, sources: bool = False
                        ) -> tuple[dict[str, str], list[str]]:
    """``(post-processing options, sources)`` of the arguments of a command that runs a trained model
    (``effdet-eval``, ``effdet-infer``, ``effdet-export``): its overrides are the ``eval`` section's post-processing
    keys (``eval.nms=hard`` -> ``{"nms": "hard"}``, values as typed; :func:`effdet.modeling.postprocess_settings.
    make_postprocess_settings` converts and checks them). The old form without the section (``nms=hard``) is
    accepted with a deprecation message. A key of another section, or any other argument when the command takes no
    ``sources``, is a :class:`ConfigError` naming what the command takes.
    """
    names = postprocess_setting_names()
    valid = [f"{POSTPROCESS_SECTION}.{name}" for name in names]
    overrides, others = split_overrides(arguments, renamed=dict(zip(names, valid)))
    options: dict[str, str] = {}
    for override in overrides:
        section, _, name = override.key.partition(".")
        if section != POSTPROCESS_SECTION:
            raise ConfigError(f"{command} takes the post-processing keys of the '{POSTPROCESS_SECTION}' section "
                              f"({' '.join(v + '=...' for v in valid)}); '{override.key}' is a training setting")
        if name not in names:
            raise ConfigError(f"unknown post-processing option(s) ['{override.key}']; valid options: {valid}")
        options[name] = override.value
    if others and not sources:
        assignments = [item.partition("=")[0].strip() for item in others if "=" in item]
        if assignments:
            raise ConfigError(f"unknown post-processing option(s) {assignments}; valid options: {valid}")
        raise ConfigError(f"{command}: unexpected argument(s) {list(others)}; it takes section.key=value overrides "
                          f"({' '.join(v + '=...' for v in valid)})")
    return options, others


def flag_wins(options: dict[str, Any], name: str, flag: str, value: Any) -> dict[str, Any]:
    """Apply a dedicated flag (``--score-thr``) that sets the post-processing option ``name``: given (not None), it
    wins over ``eval.<name>`` given as an override, and the log says so. Returns ``options``."""
    if value is None:
        return options
    if name in options:
        logger.warning(f"{flag} {value} and {POSTPROCESS_SECTION}.{name}={options[name]} both given: {flag} wins")
    options[name] = value
    return options
