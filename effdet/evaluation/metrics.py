"""COCO metrics as people and files read them: the 12 stat keys, the standard summary, aligned tables and
``metrics.json``.

Metrics are plain floats in ``0..1`` under :data:`STAT_KEYS` (-1.0 where an area range has no ground truth), plus
``per_class`` mapping class name to AP@[0.50:0.95] (None, JSON ``null``: no ground truth for that class).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..fileio import write_json_atomic
from ..types import PathLike

STAT_KEYS: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl",
    "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)

_AP, _AR = "Average Precision  (AP)", "Average Recall     (AR)"
_AREAS = ("small", "medium", "large")
# (title, IoU range, area, maxDets) of each stat, in COCOeval.summarize() order; maxDets 0 stands for the largest,
# COCO's 100 or more (the stats' "max_dets", effdet.evaluation.cocoeval.coco_max_dets): "AR100" is AR at it.
_STAT_LAYOUT: tuple[tuple[str, str, str, int], ...] = (
    (_AP, "0.50:0.95", "all", 0), (_AP, "0.50", "all", 0), (_AP, "0.75", "all", 0),
    *((_AP, "0.50:0.95", area, 0) for area in _AREAS),
    *((_AR, "0.50:0.95", "all", max_dets) for max_dets in (1, 10, 0)),
    *((_AR, "0.50:0.95", area, 0) for area in _AREAS),
)


def _layout(stats: Mapping[str, Any]) -> list[tuple[str, str, str, int]]:
    largest = int(stats.get("max_dets") or 100)
    return [(title, iou, area, max_dets or largest) for title, iou, area, max_dets in _STAT_LAYOUT]


def format_coco_summary(stats: Mapping[str, float]) -> str:
    """The standard 12-line COCOeval summary for ``stats`` (keys :data:`STAT_KEYS`; the largest maxDets is
    ``stats["max_dets"]``, default 100)."""
    lines = []
    for key, (title, iou, area, max_dets) in zip(STAT_KEYS, _layout(stats)):
        lines.append(
            f" {title:<18} @[ IoU={iou:<9} | area={area:>6s} | maxDets={max_dets:>3d} ] = {stats[key]:0.3f}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# human-readable tables
# ---------------------------------------------------------------------------------------------

def format_stats_table(stats: Mapping[str, Any]) -> str:
    """Aligned ``key  value  meaning`` table of the 12 stats (values shown as 0..1 with 4 decimals)."""
    rows = []
    for key, (title, iou, area, max_dets) in zip(STAT_KEYS, _layout(stats)):
        value = stats.get(key)
        shown = "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"
        kind = "AP" if title.startswith("Average Precision") else "AR"
        rows.append((key, shown, f"{kind} IoU={iou} area={area} maxDets={max_dets}"))
    key_width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    return "\n".join(f"{k:<{key_width}}  {v:>{value_width}}  {d}" for k, v, d in rows)


def format_per_class_table(per_class: Mapping[str, float | None], sort_by: str = "name") -> str:
    """Aligned ``class  AP`` table; ``sort_by`` is ``"name"`` or ``"ap"`` (best first, undefined last)."""
    if sort_by not in ("name", "ap"):
        raise ValueError(f"sort_by must be 'name' or 'ap', not {sort_by!r}")

    def defined(ap: float | None) -> bool:
        return ap is not None and not math.isnan(ap) and ap >= 0

    items = list(per_class.items())
    if sort_by == "name":
        items.sort(key=lambda item: item[0])
    else:
        items.sort(key=lambda item: (not defined(item[1]), -(item[1] if defined(item[1]) else 0.0), item[0]))
    header = ("class", "AP")
    rows = [(name, f"{ap:.4f}" if defined(ap) else "-") for name, ap in items]
    name_width = max([len(header[0])] + [len(r[0]) for r in rows])
    value_width = max([len(header[1])] + [len(r[1]) for r in rows])
    lines = [f"{header[0]:<{name_width}}  {header[1]:>{value_width}}", "-" * (name_width + 2 + value_width)]
    lines += [f"{name:<{name_width}}  {value:>{value_width}}" for name, value in rows]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------

def _json_safe(value: Any) -> Any:
    """numpy/torch scalars -> python; NaN/inf -> None; recurses through dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.item() if value.numel() == 1 else value.tolist()
        return _json_safe(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def save_metrics(path: PathLike, stats: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> None:
    """Write ``metrics.json``: the stats (and ``per_class``) plus optional ``extra`` keys, atomically.

    NaN becomes ``null``; -1.0 stats (no GT in that area range) are kept as -1.0.
    """
    payload = dict(stats)
    if extra:
        payload.update(extra)
    write_json_atomic(path, _json_safe(payload))
