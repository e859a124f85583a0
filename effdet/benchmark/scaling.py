"""The scaling picture: multiply-adds and measured latency against φ for the D and Lite families, with the
paper's COCO AP of each official row (like Figure 1 of the EfficientDet paper).

    python tools/benchmark.py scaling --plot scaling.png [--step 0.5] [--runs 3] [--time-up-to 3]

Multiply-adds are counted for every φ of the grid (meta device, no compute); latency is measured with real
forwards (batch 1, raw network, channels-last, median of ``runs``) for φ up to ``time_up_to`` (the big rows take
seconds per forward on a CPU).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..modeling.variants import model_config
from ..modeling.scaling import MAX_PHI, variant_name
from ..modeling.scaling.budget import Timing, count_macs, measure_latency

# COCO val AP of the official rows (EfficientDet paper; EfficientDet-Lite: the official automl README).
PAPER_COCO_AP = {
    ("d", 0): 34.3, ("d", 1): 40.2, ("d", 2): 43.5, ("d", 3): 46.8, ("d", 4): 49.3, ("d", 5): 51.2,
    ("d", 6): 52.1, ("d", 7): 53.4,
    ("lite", 0): 26.4, ("lite", 1): 31.5, ("lite", 2): 35.1, ("lite", 3): 38.8, ("lite", 4): 43.2,
}


@dataclass
class ScalingPoint:
    family: str
    phi: float
    name: str
    image_size: int
    params: int
    macs: float
    latency: Optional[Timing]
    paper_ap: Optional[float]


def scaling_points(families: Sequence[str] = ("d", "lite"), step: float = 0.5, runs: int = 3,
                   time_up_to: Optional[float] = 3.0, measure: Callable[..., Timing] = measure_latency,
                   log: Callable[[str], None] = lambda line: None) -> list[ScalingPoint]:
    """One point per family and φ of the grid ``0, step, 2·step, …`` (integer φ: the official rows)."""
    points = []
    for family in families:
        count = int(round(MAX_PHI[family] / step))
        for k in range(count + 1):
            phi = round(k * step, 6)
            config = model_config(variant_name(phi, family))
            params, macs = count_macs(config)
            latency = None
            if time_up_to is None or phi <= time_up_to:
                latency = measure(config, batch=1, runs=runs, warmup=1)
            ap = PAPER_COCO_AP.get((family, int(phi))) if phi == int(phi) else None
            points.append(ScalingPoint(family, phi, config.name, config.image_size[0], params, macs, latency, ap))
            log(scaling_row(points[-1]))
    return points


def scaling_header() -> list[str]:
    return ["| family | φ | model | input | params (M) | multiply-adds (G) | CPU latency, batch 1 | paper COCO AP |",
            "|---|---|---|---|---|---|---|---|"]


def scaling_row(p: ScalingPoint) -> str:
    latency = p.latency.describe() if p.latency is not None else "-"
    ap = f"{p.paper_ap:.1f}" if p.paper_ap is not None else "-"
    return (f"| {p.family} | {p.phi:g} | {p.name} | {p.image_size} | {p.params / 1e6:.2f} | {p.macs / 1e9:.2f} | "
            f"{latency} | {ap} |")


def plot_scaling(points: Sequence[ScalingPoint], path: str) -> str:
    """Three panels: multiply-adds vs φ, measured latency vs φ, and the paper's COCO AP vs multiply-adds and
    vs measured latency of the official rows (the paper's Figure 1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"d": "tab:red", "lite": "tab:blue"}
    labels = {"d": "EfficientDet-D", "lite": "EfficientDet-Lite"}
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.8))
    for family in sorted({p.family for p in points}):
        rows = [p for p in points if p.family == family]
        official = [p for p in rows if p.phi == int(p.phi)]
        timed = [p for p in rows if p.latency is not None]
        style = dict(color=colors[family], label=labels[family])
        axes[0].plot([p.phi for p in rows], [p.macs / 1e9 for p in rows], marker=".", **style)
        axes[0].scatter([p.phi for p in official], [p.macs / 1e9 for p in official], color=colors[family], s=40)
        axes[1].plot([p.phi for p in timed], [p.latency.median * 1e3 for p in timed], marker=".", **style)
        with_ap = [p for p in official if p.paper_ap is not None]
        axes[2].plot([p.macs / 1e9 for p in with_ap], [p.paper_ap for p in with_ap], marker="o", **style)
        for p in with_ap:
            axes[2].annotate(p.name.replace("efficientdet_", "").upper(), (p.macs / 1e9, p.paper_ap), fontsize=7,
                             xytext=(3, -9), textcoords="offset points")
        timed_ap = [p for p in with_ap if p.latency is not None]
        axes[3].plot([p.latency.median * 1e3 for p in timed_ap], [p.paper_ap for p in timed_ap], marker="o", **style)
        for p in timed_ap:
            axes[3].annotate(p.name.replace("efficientdet_", "").upper(), (p.latency.median * 1e3, p.paper_ap),
                             fontsize=7, xytext=(3, -9), textcoords="offset points")
    axes[0].set(xlabel="φ", ylabel="multiply-adds (G)", yscale="log", title="multiply-adds (counted)")
    axes[1].set(xlabel="φ", ylabel="latency (ms)", yscale="log", title="measured CPU latency, batch 1")
    axes[2].set(xlabel="multiply-adds (G)", ylabel="COCO AP (paper)", xscale="log", title="AP vs multiply-adds")
    axes[3].set(xlabel="measured latency (ms)", ylabel="COCO AP (paper)", xscale="log",
                title="AP vs measured latency (this machine)")
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def add_arguments(parser) -> None:
    parser.add_argument("--plot", help="scaling: write the figure here (e.g. scaling.png)")
    parser.add_argument("--step", type=float, default=0.5, help="scaling: φ grid step")
    parser.add_argument("--time-up-to", type=float, default=3.0, help="scaling: time forwards only up to this φ")


def run(args) -> list[str]:
    """``tools/benchmark.py scaling``: multiply-adds and latency against φ (D and Lite) with the paper's AP."""
    import torch

    torch.set_num_threads(args.threads)
    rows = scaling_header()
    print("\n".join(rows), flush=True)
    points = scaling_points(step=args.step, runs=args.runs, time_up_to=args.time_up_to,
                            log=lambda row: print(row, flush=True))
    rows += [scaling_row(p) for p in points]
    if args.plot:
        print(f"plot: {plot_scaling(points, args.plot)}")
    return rows
