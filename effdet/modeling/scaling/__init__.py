"""Compound scaling at any φ: the sizes of an EfficientDet between (or instead of) the official rows.

The official rows (D0…D7x, Lite0…4) stay the table in ``effdet.modeling.variants``; this module is the rule that
generates a model for a *fractional* φ, or for any φ from searched coefficients (α, β, γ):

    input        512 + 128·φ (Lite: 320 + 64·φ), to the nearest multiple of 8 (2^min_level: what the
                 network accepts; coarser levels follow ⌈size / stride⌉)
    BiFPN width  64·1.35^φ, to a multiple of 8 (as the official code rounds)
    BiFPN depth  3 + ⌊φ⌋             (the depth steps at the integer φ where the official rows step)
    head depth   3 + ⌊φ/3⌋
    backbone     width and depth coefficients interpolated geometrically between the neighbouring
                 EfficientNet rows B⌊φ⌋ and B⌈φ⌉ (Lite: Lite⌊φ⌋ and Lite⌈φ⌉):
                 w(φ) = w_i · (w_{i+1} / w_i)^(φ − i); the block repeats are then ⌈repeats · depth⌉ and the
                 widths rounded to multiples of 8 by the backbone itself.

Why interpolate the B-series rather than apply α^φ, β^φ: the published B1…B7 coefficients are rounded
values that do not follow 1.2^φ / 1.1^φ exactly (B1 keeps width 1.0, B4 has depth 1.8 where 1.2^4 = 2.07), so
only interpolation makes every integer φ land exactly on today's official row and every fractional φ fall
between its neighbours; geometric interpolation keeps the exponential shape of the compound rule.

With ``scaling={"alpha": α, "beta": β, "gamma": γ}`` (e.g. from ``tools/scale.py search``) the backbone
instead gets depth α^φ and width β^φ and the input base·γ^φ (base 512, Lite 320), for integer φ too; the BiFPN
and head rules above stay (the paper found those by its own grid search).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from backbones.efficientnet import EFFICIENTNET_VARIANTS

MAX_PHI = {"d": 7, "lite": 4}
BASE_INPUT = {"d": 512, "lite": 320}
INPUT_STEP = {"d": 128, "lite": 64}
SIZE_MULTIPLE = 8  # 2^min_level: the network accepts any multiple of it
_NAME_RE = re.compile(r"^efficientdet_(d|lite)(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Coefficients:
    """Compound-scaling coefficients: depth α, width β, resolution γ per unit of φ (FLOPs ×α·β²·γ² per φ)."""

    alpha: float
    beta: float
    gamma: float

    @property
    def flops_factor(self) -> float:
        return self.alpha * self.beta ** 2 * self.gamma ** 2

    @classmethod
    def from_mapping(cls, values: Union[Mapping[str, Any], "Coefficients"]) -> "Coefficients":
        """From ``{"alpha": .., "beta": .., "gamma": ..}``; unknown or missing keys fail naming them."""
        if isinstance(values, Coefficients):
            return values
        keys = {"alpha", "beta", "gamma"}
        given = set(values)
        if given != keys:
            raise ValueError(f"scaling needs exactly the keys {sorted(keys)}; got {sorted(given)} "
                             f"(missing {sorted(keys - given)}, unknown {sorted(given - keys)})")
        numbers = {k: float(values[k]) for k in keys}
        bad = [k for k, v in numbers.items() if not v > 0]
        if bad:
            raise ValueError(f"scaling coefficients must be > 0, got {numbers}")
        return cls(**numbers)


# The EfficientNet paper's coefficients (α·β²·γ² ≈ 1.92 ≈ 2).
EFFICIENTNET_COEFFICIENTS = Coefficients(1.2, 1.1, 1.15)


def check_family(family: str) -> str:
    if family not in MAX_PHI:
        raise ValueError(f"unknown model family {family!r}; valid: {sorted(MAX_PHI)}")
    return family


def check_phi(phi: float, family: str = "d") -> float:
    """φ as a float within the family's range (D: 0..7, Lite: 0..4), or a ValueError saying the range."""
    family = check_family(family)
    try:
        value = float(phi)
    except (TypeError, ValueError):
        raise ValueError(f"phi must be a number, got {phi!r}") from None
    if not 0.0 <= value <= MAX_PHI[family]:
        raise ValueError(f"phi must be within 0..{MAX_PHI[family]} for the {family} family, got {phi}")
    return value


def variant_name(phi: float, family: str = "d") -> str:
    """``efficientdet_d1.5``, ``efficientdet_lite2``… (integer φ gives the official row's name)."""
    return f"efficientdet_{check_family(family)}{float(phi):g}"


def parse_variant_name(name: str) -> Optional[tuple[float, str]]:
    """``efficientdet_d1.5`` → ``(1.5, "d")``; ``efficientdet_lite0.25`` → ``(0.25, "lite")``; else None."""
    match = _NAME_RE.match(name)
    if match is None:
        return None
    return float(match.group(2)), match.group(1)


def backbone_rows(family: str) -> list[str]:
    """The EfficientNet rows that φ = 0, 1, … select: B0…B7 (D family) or Lite0…Lite4."""
    prefix = "efficientnet_b" if check_family(family) == "d" else "efficientnet_lite"
    return [f"{prefix}{i}" for i in range(MAX_PHI[family] + 1)]


def backbone_coefficients(phi: float, family: str = "d") -> tuple[str, float, float]:
    """``(base backbone row, width, depth)`` at φ: geometric interpolation of the neighbouring rows."""
    phi = check_phi(phi, family)
    rows = backbone_rows(family)
    low = min(int(math.floor(phi)), len(rows) - 1)
    high = min(low + 1, len(rows) - 1)
    t = phi - low
    a, b = EFFICIENTNET_VARIANTS[rows[low]], EFFICIENTNET_VARIANTS[rows[high]]
    width = a.width * (b.width / a.width) ** t
    depth = a.depth * (b.depth / a.depth) ** t
    return rows[low], width, depth


def round_size(size: float, multiple: int = SIZE_MULTIPLE) -> int:
    """Nearest multiple of ``multiple`` (at least one multiple)."""
    return max(multiple, int(round(size / multiple)) * multiple)


def fpn_channels(phi: float) -> int:
    """BiFPN width 64·1.35^φ rounded to a multiple of 8 (the official rounding)."""
    return int(round(64 * 1.35 ** phi / 8) * 8)


def compound_sizes(phi: float, family: str = "d", scaling: Optional[Union[Mapping[str, Any], Coefficients]] = None
                   ) -> dict[str, Any]:
    """The sizes of the compound rule at any φ (see the module docstring), as ModelConfig fields.

    Returns ``image_size`` (int, square), ``fpn_channels``, ``fpn_layers``, ``head_layers``, ``backbone``
    (the EfficientNet row whose block table and activation are used) and ``backbone_width`` /
    ``backbone_depth`` (the coefficients that replace that row's).
    """
    phi = check_phi(phi, family)
    if scaling is None:
        backbone, width, depth = backbone_coefficients(phi, family)
        size = BASE_INPUT[family] + INPUT_STEP[family] * phi
    else:
        coefficients = Coefficients.from_mapping(scaling)
        backbone = backbone_rows(family)[0]
        base = EFFICIENTNET_VARIANTS[backbone]
        width, depth = base.width * coefficients.beta ** phi, base.depth * coefficients.alpha ** phi
        size = BASE_INPUT[family] * coefficients.gamma ** phi
    return dict(image_size=round_size(size), fpn_channels=fpn_channels(phi), fpn_layers=3 + int(math.floor(phi)),
                head_layers=3 + int(phi // 3), backbone=backbone, backbone_width=round(width, 6),
                backbone_depth=round(depth, 6))
