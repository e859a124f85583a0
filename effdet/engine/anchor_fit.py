"""Anchor-fit analysis: how well a model's anchor set can match the training boxes, and a better-fitting set.

The matcher makes an anchor a positive when its IoU with a box is >= ``match_threshold`` (0.5); a box that no
anchor reaches can never be learned (it only adds background). So the *best possible recall* (BPR) here is the
fraction of training boxes, letterboxed to the training size exactly as evaluation does (top-left, aspect
kept), that have at least one anchor of the real grid with IoU >= the threshold. (Ultralytics' autoanchor
reports the same idea with a width/height-ratio test; EfficientDet matches by IoU, so IoU is measured.)

Boxes whose size ``sqrt(w·h)`` lies outside ``[smallest anchor / sqrt(2), largest anchor · sqrt(2)]`` cannot
reach IoU 0.5 with any anchor even when centred on it; they are counted and warned about.

:func:`suggest_anchors` searches ``anchor_scale`` (and aspect-ratio sets derived from the boxes' own aspect
quantiles) for the highest BPR; applying it is opt-in: the report prints the ``model.anchor_scale=…
model.aspect_ratios=…`` overrides to pass to ``tools/train.py``.

    effdet-anchor-fit CONFIG.yaml [section.key=value ...]   # report (and suggestion) for a training config
    python tools/anchor_fit.py CONFIG.yaml [section.key=value ...]     # the same
"""
from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch

from ..data.preprocess import letterbox_scale
# anchor_size_range: this module's name too
from ..modeling.anchors import anchor_size_range, generate_anchors, smallest_matchable_side

logger = logging.getLogger("effdet.anchor_fit")

__all__ = ["AnchorFit", "anchor_fit", "anchor_size_range", "config_report", "letterboxed_boxes", "startup_check",
           "suggest_anchors"]


@dataclass
class AnchorFit:
    """Result of :func:`anchor_fit`. Sizes in training-input pixels."""

    num_boxes: int
    best_possible_recall: float  # fraction of boxes with an anchor at IoU >= threshold
    mean_best_iou: float
    too_small: float  # fraction of boxes below the smallest anchor / sqrt(2)
    too_large: float  # fraction above the largest anchor * sqrt(2)
    anchor_range: tuple[float, float]
    box_size_quantiles: dict[str, float] = field(default_factory=dict)  # sqrt(w*h): p5, p50, p95

    def warnings(self, threshold: float = 0.5) -> list[str]:
        text = []
        low, high = self.anchor_range
        if self.too_small > 0.01:
            text.append(f"{self.too_small:.1%} of the training boxes are smaller than "
                        f"{smallest_matchable_side(low):.1f} px at "
                        f"the training size: no anchor (smallest {low:.1f} px) can reach IoU {threshold} with them")
        if self.too_large > 0.01:
            text.append(f"{self.too_large:.1%} of the training boxes are larger than {high * math.sqrt(2):.0f} px: "
                        f"beyond the largest anchor ({high:.0f} px)")
        if self.best_possible_recall < 0.98:
            text.append(f"best possible recall of the anchors is {self.best_possible_recall:.3f}: "
                        f"{1 - self.best_possible_recall:.1%} of the boxes can never be matched")
        return text


def letterboxed_boxes(coco: dict[str, Any], image_size: Sequence[int]) -> torch.Tensor:
    """Non-crowd boxes of a COCO dict as xyxy ``[N, 4]`` float64, scaled as the letterbox (top-left) scales them."""
    out_h, out_w = int(image_size[0]), int(image_size[1])
    scale_of = {img["id"]: letterbox_scale(img["height"], img["width"], (out_h, out_w)) for img in coco["images"]}
    rows = []
    for ann in coco.get("annotations", []):
        if ann.get("iscrowd", 0) or ann["image_id"] not in scale_of:
            continue
        x, y, w, h = ann["bbox"]
        if w <= 0 or h <= 0:
            continue
        s = scale_of[ann["image_id"]]
        rows.append((x * s, y * s, (x + w) * s, (y + h) * s))
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def _best_ious(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Each box's highest IoU with any anchor, ``[N]``.

    Anchors lie on a full grid per shape (level x scale x aspect), and the IoU of two axis-aligned boxes of fixed
    sizes only falls as either centre offset grows, so for each shape the best anchor is the one at the grid
    centre nearest the box's centre in x and in y. That needs ``N x shapes`` IoUs instead of ``N x anchors``
    (45 instead of 12k per box at 256 px), and gives the same maximum (``tests/unit/test_pretrained_settings.py`` checks
    it against ``box_iou`` over all anchors).
    """
    boxes = boxes.to(torch.float64)
    anchors = anchors.to(torch.float64)
    best = torch.zeros(len(boxes), dtype=torch.float64)
    if len(boxes) == 0 or len(anchors) == 0:
        return best
    sizes = anchors[:, 2:] - anchors[:, :2]
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    box_centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    shapes, shape_of = torch.unique(torch.round(sizes * 1e6) / 1e6, dim=0, return_inverse=True)
    for index, (width, height) in enumerate(shapes.tolist()):
        grid = centres[shape_of == index]
        nearest = []
        for axis in (0, 1):
            values, target = torch.unique(grid[:, axis]), box_centres[:, axis].contiguous()
            above = torch.searchsorted(values, target).clamp(max=len(values) - 1)
            below = (above - 1).clamp(min=0)
            closer_below = (target - values[below]).abs() <= (values[above] - target).abs()
            nearest.append(torch.where(closer_below, values[below], values[above]))
        half = torch.tensor([width / 2, height / 2], dtype=torch.float64)
        centre = torch.stack(nearest, dim=1)
        anchor = torch.cat([centre - half, centre + half], dim=1)
        top_left = torch.maximum(boxes[:, :2], anchor[:, :2])
        bottom_right = torch.minimum(boxes[:, 2:], anchor[:, 2:])
        inter = (bottom_right - top_left).clamp(min=0).prod(dim=1)
        union = (boxes[:, 2:] - boxes[:, :2]).prod(dim=1) + width * height - inter
        best = torch.maximum(best, inter / union.clamp(min=1e-12))
    return best


def anchor_fit(boxes: torch.Tensor, image_size: Sequence[int], min_level: int = 3, max_level: int = 7,
               num_scales: int = 3, aspect_ratios: Sequence[Sequence[float]] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4)),
               anchor_scale: float = 4.0, threshold: float = 0.5) -> AnchorFit:
    """Best possible recall etc. of one anchor configuration on letterboxed xyxy ``boxes`` ``[N, 4]``."""
    size = (int(image_size[0]), int(image_size[1]))
    anchors = generate_anchors(size, min_level, max_level, num_scales, [tuple(a) for a in aspect_ratios],
                               anchor_scale, dtype=torch.float64)
    best = _best_ious(boxes.to(torch.float64), anchors)
    sides = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=0).sqrt()
    low, high = anchor_size_range(size, min_level, max_level, num_scales, anchor_scale)
    n = max(1, len(boxes))
    quantiles = {}
    if len(sides):
        q = torch.quantile(sides, torch.tensor([0.05, 0.5, 0.95], dtype=sides.dtype))
        quantiles = {"p5": float(q[0]), "p50": float(q[1]), "p95": float(q[2])}
    return AnchorFit(
        num_boxes=len(boxes),
        best_possible_recall=float((best >= threshold).sum()) / n,
        mean_best_iou=float(best.mean()) if len(best) else 0.0,
        too_small=float((sides < smallest_matchable_side(low)).sum()) / n,
        too_large=float((sides > high * math.sqrt(2)).sum()) / n,
        anchor_range=(low, high),
        box_size_quantiles=quantiles,
    )


def _aspect_candidates(boxes: torch.Tensor, current: Sequence[Sequence[float]]) -> list[list[list[float]]]:
    """The current aspect set, and 3-ratio sets from the boxes' w/h quantiles (10/50/90 % and 20/50/80 %)."""
    candidates = [[list(map(float, a)) for a in current]]
    if len(boxes) == 0:
        return candidates
    ratios = ((boxes[:, 2] - boxes[:, 0]) / (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)).clamp(0.05, 20.0)
    for low, high in ((0.1, 0.9), (0.2, 0.8)):
        qs = torch.quantile(ratios.log(), torch.tensor([low, 0.5, high], dtype=ratios.dtype)).exp().tolist()
        pairs = [[round(math.sqrt(r), 3), round(1 / math.sqrt(r), 3)] for r in qs]
        if pairs not in candidates:
            candidates.append(pairs)
    return candidates


def suggest_anchors(boxes: torch.Tensor, image_size: Sequence[int], min_level: int = 3, max_level: int = 7,
                    num_scales: int = 3, aspect_ratios: Sequence[Sequence[float]] = ((1.0, 1.0), (1.4, 0.7), (0.7, 1.4)),
                    anchor_scale: float = 4.0, threshold: float = 0.5,
                    scales: Optional[Sequence[float]] = None) -> dict[str, Any]:
    """The ``anchor_scale`` / ``aspect_ratios`` with the highest best possible recall (ties: mean best IoU, then
    the smallest change of anchor_scale). Returns ``{"anchor_scale", "aspect_ratios", "fit" (AnchorFit),
    "current" (AnchorFit)}``."""
    scales = list(scales) if scales is not None else [round(1.0 + 0.25 * i, 2) for i in range(21)]  # 1.0 .. 6.0
    current = anchor_fit(boxes, image_size, min_level, max_level, num_scales, aspect_ratios, anchor_scale, threshold)
    best_key, best = None, None
    for ratios in _aspect_candidates(boxes, aspect_ratios):
        for scale in scales:
            fit = anchor_fit(boxes, image_size, min_level, max_level, num_scales, ratios, scale, threshold)
            key = (round(fit.best_possible_recall, 4), round(fit.mean_best_iou, 4), -abs(scale - anchor_scale))
            if best_key is None or key > best_key:
                best_key, best = key, {"anchor_scale": scale, "aspect_ratios": ratios, "fit": fit}
    assert best is not None
    best["current"] = current
    return best


def format_report(current: AnchorFit, suggestion: Optional[dict[str, Any]] = None, threshold: float = 0.5) -> str:
    q = current.box_size_quantiles
    lines = [f"anchor fit: {current.num_boxes} training boxes, size sqrt(w*h) p5/p50/p95 = "
             f"{q.get('p5', 0):.1f}/{q.get('p50', 0):.1f}/{q.get('p95', 0):.1f} px; anchors "
             f"{current.anchor_range[0]:.1f}-{current.anchor_range[1]:.0f} px; best possible recall (IoU >= "
             f"{threshold}) {current.best_possible_recall:.3f}, mean best IoU {current.mean_best_iou:.3f}"]
    lines += [f"warning: {w}" for w in current.warnings(threshold)]
    if suggestion is not None:
        fit = suggestion["fit"]
        ratios = ",".join(f"[{a},{b}]" for a, b in suggestion["aspect_ratios"])
        lines.append(f"suggested (opt-in): model.anchor_scale={suggestion['anchor_scale']} "
                     f"'model.aspect_ratios=[{ratios}]' -> best possible recall {fit.best_possible_recall:.3f}, "
                     f"mean best IoU {fit.mean_best_iou:.3f} (pass them, or data.anchor_fit=apply)")
    return "\n".join(lines)


STARTUP_MAX_BOXES = 2000  # boxes sampled for the start-up check (the search costs ~80 fits over them)


def startup_check(coco: dict[str, Any], model: Any, threshold: float, mode: str = "report",
                  seed: int = 0) -> tuple[str, dict[str, Any]]:
    """The anchor-fit check ``tools/train.py`` runs before it builds the model (``data.anchor_fit``).

    Args:
        coco: the training annotation dict; model: the resolved ``ModelConfig``; threshold: the matcher's
            ``loss.match_threshold``; mode: ``report`` (log it, and when a warning fires search a better set),
            ``apply`` (also return that suggestion as model overrides) or ``off``.

    Returns ``(report text, overrides)``; ``overrides`` (``anchor_scale``, ``aspect_ratios``) is empty unless
    ``mode == "apply"`` and the suggestion has a higher best possible recall. At most
    :data:`STARTUP_MAX_BOXES` boxes are used (a seeded sample), so the check takes seconds on COCO.
    """
    if mode == "off":
        return "", {}
    boxes = letterboxed_boxes(coco, model.image_size)
    if len(boxes) > STARTUP_MAX_BOXES:
        generator = torch.Generator().manual_seed(seed)
        boxes = boxes[torch.randperm(len(boxes), generator=generator)[:STARTUP_MAX_BOXES]]
    args = (model.image_size, model.min_level, model.max_level, model.num_scales)
    current = anchor_fit(boxes, *args, model.aspect_ratios, model.anchor_scale, threshold)
    if not current.warnings(threshold):  # the anchors fit: nothing to search or apply
        return format_report(current, None, threshold), {}
    suggestion = suggest_anchors(boxes, *args, model.aspect_ratios, model.anchor_scale, threshold)
    text = format_report(current, suggestion, threshold)
    better = suggestion["fit"].best_possible_recall > current.best_possible_recall
    if mode != "apply" or not better:
        return text, {}
    overrides = {"anchor_scale": suggestion["anchor_scale"], "aspect_ratios": suggestion["aspect_ratios"]}
    return text + "\ndata.anchor_fit=apply: training with the suggested anchors", overrides


def config_report(cfg: Any) -> str:
    """The report (and suggestion) for a validated training config (:func:`effdet.engine.schema.load_train_config`): its
    training boxes (COCO annotations, ``data.train.annotations``) against its model's anchors."""
    from ..data.formats import resolve_data_path
    from .schema import resolve_model_config

    path = resolve_data_path(cfg.data.root, cfg.data.train.annotations)
    with open(path) as handle:
        coco = json.load(handle)
    model = resolve_model_config(cfg.model, num_classes=max(1, len(coco.get("categories", []))))
    boxes = letterboxed_boxes(coco, model.image_size)
    suggestion = suggest_anchors(boxes, model.image_size, model.min_level, model.max_level, model.num_scales,
                                 model.aspect_ratios, model.anchor_scale, cfg.loss.match_threshold)
    return format_report(suggestion["current"], suggestion, cfg.loss.match_threshold)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m effdet.anchor_fit CONFIG [section.key=value ...]``: the old form of ``effdet-anchor-fit``
    (:mod:`effdet.cli.anchor_fit`), kept for one release."""
    from ..deprecation import deprecated_form
    from ..logs import setup_console_logging
    from .schema import load_train_config

    setup_console_logging(logging.WARNING)
    deprecated_form("python -m effdet.anchor_fit", "effdet-anchor-fit (or python tools/anchor_fit.py)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__)
        return 2
    print(config_report(load_train_config(argv[0], argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
