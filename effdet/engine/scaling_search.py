"""The paper's α·β·γ grid search, on the user's data.

EfficientNet fixes φ = 1 (twice the baseline's FLOPs) and tries a small grid of depth α, width β and
resolution γ multipliers with α·β²·γ² ≈ 2; the best by accuracy becomes the compound-scaling rule. Here each
candidate is the user's recipe (its model = the baseline at φ = 0) scaled to φ = 1 with ``model.scaling =
{alpha, beta, gamma}``: backbone depth ×α, width ×β, input ×γ (see :mod:`effdet.modeling.scaling`). Every candidate
trains for the same fixed number of optimizer steps through the normal training entry point
(:func:`effdet.engine.runner.train`: Lightning, same recipe, from scratch: ImageNet weights do not fit a widened
backbone) and is scored by the COCO AP of its final validation.

Cost: (number of candidates) × ``budget_steps`` training steps, plus one validation per candidate.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..modeling.scaling import Coefficients, round_size

DEFAULT_ALPHAS = (1.1, 1.2, 1.3)
DEFAULT_BETAS = (1.05, 1.1, 1.2)


def coefficient_grid(alphas: Sequence[float] = DEFAULT_ALPHAS, betas: Sequence[float] = DEFAULT_BETAS,
                     target: float = 2.0) -> list[Coefficients]:
    """Every (α, β) of the grid with γ = sqrt(target / (α·β²)), so that α·β²·γ² = target exactly; candidates
    that would need γ < 1 (shrinking the input) are left out."""
    grid = []
    for alpha in alphas:
        for beta in betas:
            gamma = math.sqrt(target / (alpha * beta ** 2))
            if gamma >= 1.0:
                grid.append(Coefficients(round(alpha, 4), round(beta, 4), round(gamma, 4)))
    if not grid:
        raise ValueError(f"no (α, β) in {list(alphas)} × {list(betas)} leaves γ ≥ 1 for α·β²·γ² = {target}")
    return grid


@dataclass
class SearchRow:
    alpha: float
    beta: float
    gamma: float
    image_size: int
    params: int
    macs: float
    ap: float
    ap50: float
    output_dir: str


def candidate_config(recipe: Any, coefficients: Coefficients, budget_steps: int, output_dir: str) -> Any:
    """The recipe scaled to φ = 1 by ``coefficients``, trained from scratch for ``budget_steps`` steps."""
    from omegaconf import OmegaConf

    from .schema import resolve_model_config

    base = resolve_model_config(recipe.model, num_classes=1)
    cfg = OmegaConf.create(OmegaConf.to_container(recipe, resolve=True))
    cfg.model.phi = 1.0
    cfg.model.scaling = {"alpha": coefficients.alpha, "beta": coefficients.beta, "gamma": coefficients.gamma}
    # the baseline's own resolution (the recipe's image_size, e.g. 256 for the demo) times γ
    cfg.model.image_size = round_size(base.image_size[0] * coefficients.gamma)
    cfg.model.pretrained_backbone = None
    cfg.model.weights = None
    cfg.trainer.max_steps = int(budget_steps)
    cfg.trainer.max_epochs = int(budget_steps)  # an epoch has at least one step: max_steps decides
    cfg.output_dir = output_dir
    cfg.resume = False
    return cfg


def run_search(recipe: Any, budget_steps: int, output_dir: str, grid: Optional[Sequence[Coefficients]] = None,
               train: Optional[Callable[[Any], dict]] = None, log: Callable[[str], None] = print) -> list[SearchRow]:
    """Train every candidate of ``grid`` (default :func:`coefficient_grid`) for ``budget_steps`` steps; rows
    sorted by val AP, best first. Writes ``search.json``, ``search.md`` (the table) and ``search.png`` (when
    matplotlib is installed) to ``output_dir``; each run has its own ``run_<i>/`` directory."""
    from .schema import load_train_config, resolve_model_config
    from ..modeling.scaling.budget import count_macs

    if budget_steps < 1:
        raise ValueError(f"budget_steps must be >= 1, got {budget_steps}")
    if train is None:
        from .runner import train
    grid = list(grid or coefficient_grid())
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for index, coefficients in enumerate(grid):
        from omegaconf import OmegaConf

        candidate = candidate_config(recipe, coefficients, budget_steps, str(out / f"run_{index}"))
        path = out / f"run_{index}.yaml"  # the candidate's full config: rerun it with tools/train.py
        OmegaConf.save(candidate, path)
        cfg = load_train_config(str(path))
        config = resolve_model_config(cfg.model, num_classes=1)
        params, macs = count_macs(config)
        log(f"[{index + 1}/{len(grid)}] α={coefficients.alpha:g} β={coefficients.beta:g} γ={coefficients.gamma:g}: "
            f"{config.image_size[0]} px, {params / 1e6:.2f} M params, {macs / 1e9:.2f} GMACs, {budget_steps} steps")
        metrics = train(cfg)
        rows.append(SearchRow(coefficients.alpha, coefficients.beta, coefficients.gamma, config.image_size[0], params,
                              macs, float(metrics["AP"]), float(metrics["AP50"]), cfg.output_dir))
        log(f"    val AP {rows[-1].ap:.3f}, AP50 {rows[-1].ap50:.3f}")
    rows.sort(key=lambda row: (row.ap, row.ap50), reverse=True)
    (out / "search.json").write_text(json.dumps({"budget_steps": budget_steps, "runs": len(rows),
                                                 "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    (out / "search.md").write_text(search_table(rows, budget_steps) + "\n")
    plot_search(rows, out / "search.png")
    return rows


def search_table(rows: Sequence[SearchRow], budget_steps: int) -> str:
    """Markdown table, best first (the first row is marked)."""
    lines = [f"| α (depth) | β (width) | γ (resolution) | α·β²·γ² | input | params (M) | multiply-adds (G) | "
             f"val AP after {budget_steps} steps | AP50 |", "|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        ap = f"**{r.ap:.3f}** (best)" if i == 0 else f"{r.ap:.3f}"
        lines.append(f"| {r.alpha:g} | {r.beta:g} | {r.gamma:.3f} | {r.alpha * r.beta ** 2 * r.gamma ** 2:.2f} | "
                     f"{r.image_size} | {r.params / 1e6:.2f} | {r.macs / 1e9:.2f} | {ap} | {r.ap50:.3f} |")
    return "\n".join(lines)


def plot_search(rows: Sequence[SearchRow], path: Path) -> Optional[Path]:
    """val AP against multiply-adds, one labelled point per (α, β, γ); None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, r in enumerate(rows):
        ax.scatter(r.macs / 1e9, r.ap, s=60, color="tab:red" if i == 0 else "tab:blue")
        ax.annotate(f"α={r.alpha:g} β={r.beta:g} γ={r.gamma:.2f}", (r.macs / 1e9, r.ap), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("multiply-adds (G) at the candidate's input size")
    ax.set_ylabel("val AP")
    ax.set_title("α·β·γ search at φ = 1 (α·β²·γ² = 2), same training budget each")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
