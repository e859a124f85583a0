"""Post-processing settings: what turns the network's outputs into detections (score threshold, top-k, NMS, the
number of detections, flip TTA, sliced inference of large images), with their types, defaults and rules, defined once.

The Predictor, validation during training, ``effdet-eval`` / ``effdet-infer`` / ``effdet-export`` and the ``eval:``
section of the training config (:mod:`effdet.engine.schema` generates that section from :class:`PostprocessSettings`) all
use this class. No torch: the schema and the tools import it before anything heavy.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from ..choices import MERGE_METHODS, MERGE_METRICS, NMS_METHODS
from ..types import PathLike

__all__ = ["GRAPH_FIXED_SETTINGS", "SLICING_SETTINGS", "PostprocessSettings", "check_graph_settings", "make_postprocess_settings",
           "postprocess_setting_names", "settings_problems"]


@dataclass
class PostprocessSettings:
    """Decoding settings; the defaults are the paper's evaluation settings (Gaussian soft-NMS σ 0.5,
    score threshold 0.001, top 5000 before NMS, 100 detections per image)."""

    score_threshold: float = 0.001  # detections scoring below it are dropped
    pre_nms_top_k: int = 5000  # anchor x class candidates kept before NMS
    nms: str = "soft"  # soft (Gaussian, the official evaluation) | hard
    iou_threshold: float = 0.5  # hard NMS (and the merge of flip TTA)
    soft_nms_sigma: float = 0.5
    max_detections: int = 100  # per image
    hflip_tta: bool = False  # also run the mirrored image and merge the detections
    # Sliced inference of large images (effdet/ops/slicing.py): an image with a side above slice_size is cut
    # into slice_size x slice_size windows (source pixels) overlapping by slice_overlap, each letterboxed and detected
    # like an image (slice_batch_size windows per forward); the detections, in source pixels, are merged per class.
    slice_size: Optional[int] = None  # slice side in source pixels; null: no slicing
    slice_overlap: float = 0.2  # fraction of slice_size that neighbouring windows share, in [0, 1)
    slice_full_image: bool = False  # also detect on the whole image (for objects larger than a slice)
    merge: str = "nms"  # nms | nmm (non-maximum merging: the kept box becomes the enclosing box of those it absorbs)
    merge_metric: str = "iou"  # iou | ios (intersection over the smaller box's area)
    merge_threshold: float = 0.5  # boxes of one class overlapping more than this are merged
    slice_batch_size: int = 8  # slices per forward pass

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> PostprocessSettings:
        """Settings from a mapping that may hold other keys too (a training config's ``eval`` section)."""
        known = postprocess_setting_names()
        return cls(**{k: v for k, v in dict(values).items() if k in known})


def postprocess_setting_names() -> tuple[str, ...]:
    """The option names, in declaration order (``score_threshold`` ... ``slice_batch_size``)."""
    return tuple(f.name for f in dataclasses.fields(PostprocessSettings))


def settings_problems(settings: Any) -> dict[str, str]:
    """The rules the settings break: ``{option: "must be >= 1, got 0"}`` (empty when valid). ``settings`` is a
    :class:`PostprocessSettings` or anything with the same attributes (a config's ``eval`` section)."""
    problems = {}
    if settings.nms not in NMS_METHODS:
        problems["nms"] = f"must be one of {list(NMS_METHODS)}, got {settings.nms!r}"
    if not 0.0 <= settings.score_threshold < 1.0:
        problems["score_threshold"] = f"must be in [0, 1), got {settings.score_threshold}"
    if not 0.0 < settings.iou_threshold <= 1.0:
        problems["iou_threshold"] = f"must be in (0, 1], got {settings.iou_threshold}"
    if settings.soft_nms_sigma <= 0:
        problems["soft_nms_sigma"] = f"must be > 0, got {settings.soft_nms_sigma}"
    if settings.pre_nms_top_k < 1:
        problems["pre_nms_top_k"] = f"must be >= 1, got {settings.pre_nms_top_k}"
    if settings.max_detections < 1:
        problems["max_detections"] = f"must be >= 1, got {settings.max_detections}"
    slice_size = getattr(settings, "slice_size", None)
    if slice_size is not None and (isinstance(slice_size, bool) or not isinstance(slice_size, int) or slice_size < 1):
        problems["slice_size"] = f"must be null (no slicing) or an integer >= 1 (pixels), got {slice_size!r}"
    if not 0.0 <= settings.slice_overlap < 1.0:
        problems["slice_overlap"] = f"must be in [0, 1), got {settings.slice_overlap}"
    if settings.merge not in MERGE_METHODS:
        problems["merge"] = f"must be one of {list(MERGE_METHODS)}, got {settings.merge!r}"
    if settings.merge_metric not in MERGE_METRICS:
        problems["merge_metric"] = f"must be one of {list(MERGE_METRICS)}, got {settings.merge_metric!r}"
    if not 0.0 <= settings.merge_threshold <= 1.0:
        problems["merge_threshold"] = f"must be in [0, 1], got {settings.merge_threshold}"
    if settings.slice_batch_size < 1:
        problems["slice_batch_size"] = f"must be >= 1, got {settings.slice_batch_size}"
    return problems


def check_settings(settings: PostprocessSettings) -> None:
    """Raise ``ValueError`` naming every broken rule."""
    problems = settings_problems(settings)
    if problems:
        raise ValueError("invalid post-processing settings: " + "; ".join(f"{k} {v}" for k, v in problems.items()))


# Options whose value may be null (None): their type when set.
_OPTIONAL_TYPES: dict[str, type] = {"slice_size": int}


def _coerce(name: str, value: Any, default: Any) -> Any:
    """``value`` (a string from the command line, or a Python value) as the type of ``default`` (for an option that
    may be null, :data:`_OPTIONAL_TYPES`'s; ``null``/``none`` give None)."""
    if name in _OPTIONAL_TYPES:
        if value is None or str(value).strip().lower() in ("null", "none", "~", ""):
            return None
        default = _OPTIONAL_TYPES[name]()
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"post-processing option '{name}' must be true or false, got {value!r}")
    if kind is int:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"post-processing option '{name}' must be an integer, got {value!r}") from None
        if not number.is_integer():
            raise ValueError(f"post-processing option '{name}' must be an integer, got {value!r}")
        return int(number)
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"post-processing option '{name}' must be a number, got {value!r}") from None
    return str(value)


def make_postprocess_settings(
    base: Union[PostprocessSettings, Mapping[str, Any], None] = None,
    overrides: Mapping[str, Any] | None = None,
) -> PostprocessSettings:
    """Post-processing settings: ``base`` (settings, or a training config's ``eval`` section whose other
    keys are ignored; default the paper's settings) with ``overrides`` applied.

    Override values may be strings (``"0.05"``, ``"true"``) and are converted to each field's type.
    Unknown override keys fail naming the valid ones; out-of-range values fail naming the rule.
    """
    if base is None:
        settings = PostprocessSettings()
    elif isinstance(base, PostprocessSettings):
        settings = PostprocessSettings(**{name: getattr(base, name) for name in postprocess_setting_names()})
    else:
        settings = PostprocessSettings.from_mapping(base)
    defaults = dataclasses.asdict(settings)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise ValueError(f"unknown post-processing option(s) {unknown}; valid options: {sorted(defaults)}")
    settings = dataclasses.replace(settings, **{k: _coerce(k, v, defaults[k]) for k, v in overrides.items()})
    check_settings(settings)
    return settings


# The options of sliced inference: applied around the network (a graph with NMS inside too), never inside it.
SLICING_SETTINGS = ("slice_size", "slice_overlap", "slice_full_image", "merge", "merge_metric", "merge_threshold",
                    "slice_batch_size")


# What a graph with NMS inside fixed at export: these must stay as they are; the score threshold may only rise and
# max_detections only fall (dropping detections the graph returned is all that can be done after it).
GRAPH_FIXED_SETTINGS = ("nms", "hflip_tta", "iou_threshold", "pre_nms_top_k")


def check_graph_settings(path: PathLike, graph: PostprocessSettings, wanted: PostprocessSettings) -> None:
    """Refuse post-processing that an exported graph with NMS cannot honour (``ValueError`` naming the file, the
    setting and the graph's value), instead of running with the graph's and recording the wanted ones."""
    problems = [f"{name}={getattr(wanted, name)!r} (the graph has {name}={getattr(graph, name)!r})"
                for name in GRAPH_FIXED_SETTINGS if getattr(wanted, name) != getattr(graph, name)]
    if wanted.score_threshold < graph.score_threshold:
        problems.append(f"score_threshold={wanted.score_threshold!r} below the graph's "
                        f"(score_threshold={graph.score_threshold!r})")
    if wanted.max_detections > graph.max_detections:
        problems.append(f"max_detections={wanted.max_detections!r} above the graph's "
                        f"(max_detections={graph.max_detections!r})")
    if problems:
        raise ValueError(
            f"'{path}' has decoding and NMS inside the graph, fixed at export; it cannot apply "
            f"{'; '.join(problems)}. Leave these settings out, or export again with them (or without --nms, to "
            f"choose the post-processing at run time)")
