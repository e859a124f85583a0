"""Model configuration and the variant table (D0–D7x, Lite0–4, Lite3x), generated from φ.

The paper's compound rule turns one coefficient φ into every size of the detector:
    input        512 + 128·φ            (Lite: 320 + 64·φ)
    BiFPN width  64·1.35^φ, to a multiple of 8
    BiFPN depth  3 + φ
    head depth   3 + ⌊φ/3⌋
    backbone     EfficientNet-B{φ}      (Lite: EfficientNet-Lite{φ})
The official models depart from the rule in a few places; those departures are recorded as data in
``OFFICIAL_DEPARTURES`` (the official table is the truth), never as branches in the model code.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from .preprocess import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD  # 0..255 pixel units

DEFAULT_ASPECT_RATIOS = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))


@dataclass
class ModelConfig:
    """Everything that defines an EfficientDet network and its pre-processing.

    Sizes are in pixels; ``mean``/``std`` are per RGB channel on 0..255 pixel values.
    """

    name: str = "efficientdet_d0"
    backbone: str = "efficientnet_b0"
    image_size: list[int] = field(default_factory=lambda: [512, 512])  # [height, width]
    num_classes: int = 90
    min_level: int = 3
    max_level: int = 7
    fpn_channels: int = 64
    fpn_layers: int = 3
    head_layers: int = 3
    fusion: str = "fast"  # fast | attn | sum
    act: str = "swish"  # activation of the BiFPN and heads (the backbone row has its own)
    backbone_act: Optional[str] = None  # None: the backbone row's activation
    padding: str = "symmetric"  # symmetric | same (TF 'SAME', for TF-trained checkpoints)
    conv_bias: bool = False  # bias on convs that precede a BN (TF-ported checkpoints carry one)
    num_scales: int = 3
    aspect_ratios: list[list[float]] = field(default_factory=lambda: [list(r) for r in DEFAULT_ASPECT_RATIOS])
    anchor_scale: float = 4.0
    bn_eps: float = 1e-3  # BiFPN and heads
    bn_momentum: float = 0.01
    backbone_bn_eps: float = 1e-3
    backbone_bn_momentum: float = 0.1
    drop_path_rate: float = 0.2
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))

    @property
    def num_levels(self) -> int:
        return self.max_level - self.min_level + 1

    @property
    def num_anchors(self) -> int:
        return self.num_scales * len(self.aspect_ratios)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def fpn_channels_rule(phi: int) -> int:
    """BiFPN width of the compound rule: 64·1.35^φ rounded to a multiple of 8."""
    return int(round(64 * 1.35 ** phi / 8) * 8)


def compound_row(phi: int, lite: bool = False) -> dict[str, Any]:
    """The sizes the paper's compound rule gives for φ (before official departures)."""
    row: dict[str, Any] = dict(
        image_size=320 + 64 * phi if lite else 512 + 128 * phi,
        fpn_channels=fpn_channels_rule(phi),
        fpn_layers=3 + phi,
        head_layers=3 + phi // 3,
        backbone=f"efficientnet_lite{phi}" if lite else f"efficientnet_b{phi}",
    )
    if lite:
        row.update(fusion="sum", act="relu6", mean=list(LITE_MEAN), std=list(LITE_STD), anchor_scale=3.0)
    return row


# name: (φ, lite?) — the generator input of every row.
VARIANT_PHI: dict[str, tuple[int, bool]] = {
    **{f"efficientdet_d{phi}": (phi, False) for phi in range(8)},
    "efficientdet_d7x": (7, False),
    **{f"efficientdet_lite{phi}": (phi, True) for phi in range(5)},
    "efficientdet_lite3x": (3, True),
}

# Where the official models differ from the compound rule (official automl / paper table).
OFFICIAL_DEPARTURES: dict[str, dict[str, Any]] = {
    "efficientdet_d2": dict(fpn_channels=112),
    "efficientdet_d4": dict(fpn_channels=224),
    "efficientdet_d5": dict(image_size=1280, fpn_layers=7),
    "efficientdet_d6": dict(fpn_layers=8, fusion="sum"),
    "efficientdet_d7": dict(image_size=1536, fpn_channels=384, fpn_layers=8, fusion="sum",
                            backbone="efficientnet_b6", anchor_scale=5.0),
    "efficientdet_d7x": dict(image_size=1536, fpn_channels=384, fpn_layers=8, fusion="sum", max_level=8),
    "efficientdet_lite0": dict(drop_path_rate=0.0),
    "efficientdet_lite2": dict(fpn_channels=112),
    "efficientdet_lite3": dict(anchor_scale=4.0),
    "efficientdet_lite3x": dict(image_size=640, fpn_channels=200),
    "efficientdet_lite4": dict(image_size=640, fpn_channels=224, anchor_scale=4.0),
}

# Settings that reproduce checkpoints ported from the TF implementation (the reference package's
# `tf_` models): TF 'SAME' padding, a bias before every BN, backbone BN eps 1e-3.
TF_PORT_SETTINGS: dict[str, Any] = dict(padding="same", conv_bias=True, backbone_bn_eps=1e-3)
# The reference package's PyTorch-native `efficientdet_d*` models use PyTorch BN eps in the backbone.
NATIVE_PORT_SETTINGS: dict[str, Any] = dict(padding="symmetric", conv_bias=False, backbone_bn_eps=1e-5)


def variant_row(name: str) -> dict[str, Any]:
    """The full table row of a variant: compound rule for its φ, then the official departures."""
    phi, lite = VARIANT_PHI[name]
    row = compound_row(phi, lite)
    row.update(OFFICIAL_DEPARTURES.get(name, {}))
    row["name"] = name
    return row


def _alias_table() -> dict[str, tuple[str, dict[str, Any]]]:
    """Names of the reference `effdet` package → (our variant, settings that match its checkpoints)."""
    aliases: dict[str, tuple[str, dict[str, Any]]] = {}
    for name in VARIANT_PHI:
        aliases["tf_" + name] = (name, dict(TF_PORT_SETTINGS))
    return aliases


MODEL_ALIASES = _alias_table()


def list_models(include_aliases: bool = False) -> list[str]:
    """Names accepted by :func:`effdet.create_model` (aliases: the reference package's `tf_` names)."""
    names = list(VARIANT_PHI)
    return names + sorted(MODEL_ALIASES) if include_aliases else names


def model_config(name_or_phi: str | int = "efficientdet_d0", **overrides: Any) -> ModelConfig:
    """Resolve a variant name (or φ for the D-family) plus overrides into a :class:`ModelConfig`.

    Unknown names fail with the list of valid ones; unknown override keys fail naming the valid fields.
    ``image_size`` may be an int (square) or ``[height, width]``.
    """
    if isinstance(name_or_phi, int) and not isinstance(name_or_phi, bool):
        if not 0 <= name_or_phi <= 7:
            raise ValueError(f"phi must be 0..7 for the D-family, got {name_or_phi}")
        name_or_phi = f"efficientdet_d{name_or_phi}"
    name = str(name_or_phi)
    settings: dict[str, Any] = {}
    if name in MODEL_ALIASES:
        base, settings = MODEL_ALIASES[name]
        row = variant_row(base)
        row["name"] = name
    elif name in VARIANT_PHI:
        row = variant_row(name)
    else:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models(include_aliases=True))}")
    row.update(settings)
    row.update(overrides)
    valid = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(row) - valid)
    if unknown:
        raise ValueError(f"unknown model config key(s) {unknown}; valid keys: {sorted(valid)}")
    row["image_size"] = normalize_image_size(row["image_size"])
    return ModelConfig(**row)


def normalize_image_size(size: Any) -> list[int]:
    """``512`` or ``[512]`` → ``[512, 512]``; ``[h, w]`` stays."""
    if isinstance(size, int):
        return [size, size]
    size = [int(s) for s in size]
    if len(size) == 1:
        return size * 2
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"image_size must be an int or [height, width], got {size}")
    return size


# --------------------------------------------------------------------------------------------------
# Training configuration: one schema for YAML files merged with `key=value` command-line overrides.
# --------------------------------------------------------------------------------------------------

# Keys of the `model:` section besides the ModelConfig fields (which are all optional overrides there).
MODEL_SECTION_EXTRA = ("phi", "weights", "pretrained_backbone", "reset_class_head", "trust_checkpoint")


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
        ("phi", Optional[int], field(default=None)),
        ("weights", Optional[str], field(default=None)),  # checkpoint to start from (any supported format)
        ("pretrained_backbone", Optional[str], field(default=None)),  # e.g. efficientnet_lite0 or a path
        ("reset_class_head", bool, field(default=False)),  # re-initialise the class net if classes differ
        ("trust_checkpoint", bool, field(default=False)),  # allow checkpoints that need full unpickling
    ]
    return dataclasses.make_dataclass("ModelSection", fields)


ModelSection = _model_section_class()


@dataclass
class DataSplit:
    images: str = "???"  # images folder (relative paths resolve against data.root)
    annotations: str = "???"  # COCO instances JSON


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
    # random crop: keep a clipped box when this fraction of its area stays visible (0: any box with area, as the
    # official TF pipeline and the reference do; the crop still drops boxes with a side under 2 px)
    crop_min_visible: float = 0.2
    check_files: bool = True  # skip annotation entries whose image file is missing (counted)


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
    ema_decay: Optional[float] = 0.9998  # EMA of weights; null disables. Warm-up: min(decay, (1+t)/(10+t))
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
    unmatched_threshold: float = 0.4  # IoU < this: background; in between: ignored


@dataclass
class EvalConfig:
    score_threshold: float = 0.001
    pre_nms_top_k: int = 5000
    nms: str = "soft"  # soft (Gaussian, the official evaluation) | hard
    iou_threshold: float = 0.5  # hard NMS
    soft_nms_sigma: float = 0.5
    max_detections: int = 100
    every_n_epochs: int = 1
    backend: str = "pycocotools"  # pycocotools | faster_coco_eval


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)  # type: ignore[valid-type]
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Handed to lightning.Trainer (max_epochs, max_steps, precision, accelerator, devices, strategy,
    # num_nodes, ...); keys are checked against Trainer's signature.
    trainer: dict[str, Any] = field(default_factory=lambda: {"max_epochs": 300})
    output_dir: str = "runs/exp"
    seed: int = 0
    resume: bool = True  # continue from output_dir/checkpoints/last.ckpt when it exists
    channels_last: bool = True  # NHWC activations: faster convolutions on CPU (~1.2x training) and tensor cores


class ConfigError(ValueError):
    """A configuration problem found before anything heavy starts; the message names the key."""


CHOICES: dict[str, tuple[str, ...]] = {
    "optim.name": ("sgd", "adamw"),
    "optim.schedule": ("cosine", "constant"),
    "loss.box_loss": ("huber", "giou"),
    "eval.nms": ("soft", "hard"),
    "eval.backend": ("pycocotools", "faster_coco_eval"),
}


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
    bad = [item for item in overrides if "=" not in item]
    if bad:
        raise ConfigError(f"command-line overrides must look like key=value, got {bad}")
    layers.append(OmegaConf.from_dotlist(list(overrides)))
    source = path or "command line"
    cfg = schema
    for layer, where in zip(layers, [source] * (len(layers) - 1) + ["command line"]):
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
        if value not in choices:
            raise ConfigError(f"config key '{key}' is {value!r}; valid choices: {list(choices)}")
    unknown = sorted(set(cfg.trainer.keys()) - set(trainer_arguments()))
    if unknown:
        raise ConfigError(f"unknown trainer argument(s) {unknown} in 'trainer'; valid: {trainer_arguments()}")
    for split in ("train", "val"):
        for part in ("images", "annotations"):
            if OmegaConf.is_missing(cfg.data[split], part):
                raise ConfigError(f"config key 'data.{split}.{part}' is required (a path, relative to data.root)")
    if cfg.data.batch_size < 1:
        raise ConfigError(f"config key 'data.batch_size' must be >= 1, got {cfg.data.batch_size}")
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
    from .pretrained_settings import pretrained_backbone_settings

    overrides = model_overrides(section)
    if section["pretrained_backbone"] and not section["weights"]:
        overrides = {**pretrained_backbone_settings(section["pretrained_backbone"], section["trust_checkpoint"]),
                     **overrides}
    if overrides.get("num_classes") is None and num_classes is not None:
        overrides["num_classes"] = num_classes
    name = section["phi"] if section["phi"] is not None else section["name"]
    return model_config(name, **overrides)


def resolve_data_path(root: Optional[str], path: str) -> str:
    """``path`` if absolute or no root is set, else ``root/path``."""
    if root and not os.path.isabs(path):
        return os.path.join(root, path)
    return path
