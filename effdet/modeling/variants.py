"""``ModelConfig`` and the variant table (D0–D7x, Lite0–4, Lite3x), generated from φ.

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
from dataclasses import dataclass, field
from typing import Any, Optional

from ..data.preprocess import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD  # 0..255 pixel units

DEFAULT_ASPECT_RATIOS = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4))


@dataclass
class ModelConfig:
    """Everything that defines an EfficientDet network and its pre-processing.

    Sizes are in pixels; ``mean``/``std`` are per RGB channel on 0..255 pixel values.
    """

    name: str = "efficientdet_d0"
    backbone: str = "efficientnet_b0"
    backbone_width: Optional[float] = None  # None: the backbone row's width coefficient (fractional φ sets it)
    backbone_depth: Optional[float] = None  # None: the backbone row's depth coefficient
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


def model_config(name_or_phi: str | float = "efficientdet_d0", **overrides: Any) -> ModelConfig:
    """Resolve a variant name (or φ) plus overrides into a :class:`ModelConfig`.

    ``name_or_phi``: an official name (``efficientdet_d3``, ``efficientdet_lite3x``, the reference's ``tf_``
    aliases), a φ name (``efficientdet_d1.5``, ``efficientdet_lite0.5``) or a number φ (D family; Lite with
    ``family="lite"``). ``phi=…`` as a keyword selects φ in the family of the given name. Integer φ gives the
    official row; fractional φ, or ``scaling={"alpha", "beta", "gamma"}``, the compound rule of
    :mod:`effdet.modeling.scaling`. Unknown names fail with the list of valid ones; unknown override keys fail naming the
    valid fields. ``image_size`` may be an int (square) or ``[height, width]``.
    """
    from . import scaling as compound

    phi, family, coefficients = overrides.pop("phi", None), overrides.pop("family", None), overrides.pop("scaling", None)
    if isinstance(name_or_phi, (int, float)) and not isinstance(name_or_phi, bool):
        name_or_phi, phi = "efficientdet_d0", name_or_phi if phi is None else phi
    name = str(name_or_phi)
    parsed = compound.parse_variant_name(name) if name not in VARIANT_PHI else None
    if phi is not None or parsed is not None or coefficients is not None:
        if name in MODEL_ALIASES or (name not in VARIANT_PHI and parsed is None):
            raise ValueError(f"phi/scaling need a D or Lite name (efficientdet_d…, efficientdet_lite…), got {name!r}")
        if parsed is not None:
            base_phi, base_family = parsed
        else:
            base_phi, base_family = VARIANT_PHI[name][0], "lite" if VARIANT_PHI[name][1] else "d"
        family = compound.check_family(family or base_family)
        try:
            phi = compound.check_phi(base_phi if phi is None else phi, family)
        except ValueError as error:
            if parsed is None:
                raise
            raise ValueError(f"unknown model {name!r} ({error}); valid names: "
                             f"{', '.join(list_models(include_aliases=True))}") from None
        if coefficients is None and phi == int(phi):
            name = compound.variant_name(phi, family)  # the official row of this φ
        else:
            row = compound_row(0, lite=family == "lite")
            row.update(compound.compound_sizes(phi, family, coefficients), name=compound.variant_name(phi, family))
            return _finish(row, {}, overrides)
    settings: dict[str, Any] = {}
    if name in MODEL_ALIASES:
        base, settings = MODEL_ALIASES[name]
        row = variant_row(base)
        row["name"] = name
    elif name in VARIANT_PHI:
        row = variant_row(name)
    else:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(list_models(include_aliases=True))} "
                         "(or efficientdet_d<φ> / efficientdet_lite<φ> for any φ, e.g. efficientdet_d1.5)")
    return _finish(row, settings, overrides)


def _finish(row: dict[str, Any], settings: dict[str, Any], overrides: dict[str, Any]) -> ModelConfig:
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
