"""Fit a model to a budget: the largest φ whose measured latency (or counted multiply-adds) fits.

Candidates are the compound rule's models on a φ grid (0.25 by default; integer φ = the official rows).
Latency is measured on the machine that runs the search: real timed forwards of the raw network at each
candidate's own resolution, after warm-up; each figure is the median of several runs with its spread.
Multiply-adds are counted by instrumenting a forward on the meta device (``torch.utils.flop_counter``; the
counter's FLOPs / 2, as the paper counts), so counting costs no computation.

The search assumes cost grows with φ: it measures φ = 0, 1, 2, … until one does not fit, then bisects the
grid between the last fit and the first miss. Every measured candidate is a row of the report.
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from ...runtime.sessions import check_runtime
from ..variants import ModelConfig, model_config
from . import MAX_PHI, check_family, variant_name

Timer = Callable[[], float]
LATENCY_RUNTIMES: tuple[str, ...] = ("torch", "onnxruntime")  # the runtimes measure_latency times


@dataclass
class Timing:
    """Seconds per forward: median and spread of ``runs`` timed runs."""

    median: float
    min: float
    max: float
    runs: int

    @classmethod
    def of(cls, times: Sequence[float]) -> "Timing":
        return cls(statistics.median(times), min(times), max(times), len(times))

    def describe(self) -> str:
        return f"{self.median * 1e3:.1f} ms ({self.min * 1e3:.1f}–{self.max * 1e3:.1f}, n={self.runs})"


@dataclass
class Candidate:
    """One measured model: its config, size and cost."""

    phi: float
    config: ModelConfig
    params: int
    macs: float  # multiply-adds per image batch of the measurement (batch 1: per image)
    latency: Optional[Timing] = None
    fits: Optional[bool] = None

    @property
    def name(self) -> str:
        return self.config.name


def count_macs(config: ModelConfig, batch: int = 1) -> tuple[int, float]:
    """``(parameters, multiply-adds)`` of the network of ``config`` at its ``image_size``, counted on the meta
    device (no memory, no compute)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ..model import EfficientDet

    with torch.device("meta"):
        model = EfficientDet(config).eval()
        images = torch.zeros(batch, 3, *config.image_size)
    params = sum(p.numel() for p in model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(images)
    return params, counter.get_total_flops() / 2


def measure_latency(config: ModelConfig, batch: int = 1, runs: int = 7, warmup: int = 2,
                    runtime: str = "torch", device: Optional[str] = None, timer: Timer = time.perf_counter) -> Timing:
    """Time ``runs`` forwards of the raw network (random weights, random normalised input [batch, 3, H, W] at
    ``config.image_size``) after ``warmup`` untimed ones.

    ``runtime="torch"``: eval mode, channels-last, ``torch.no_grad`` on ``device`` (default: CUDA when available,
    synchronised around each run). ``runtime="onnxruntime"``: the network exported to ONNX (opset 17) and run
    with onnxruntime's default CPU provider.
    """
    from ..model import EfficientDet

    check_runtime(runtime, LATENCY_RUNTIMES)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = EfficientDet(config).eval()
    images = torch.randn(batch, 3, *config.image_size)
    if runtime == "torch":
        model = model.to(device, memory_format=torch.channels_last)
        images = images.to(device).contiguous(memory_format=torch.channels_last)
        sync = torch.cuda.synchronize if images.is_cuda else (lambda: None)

        def forward() -> None:
            with torch.no_grad():
                model(images)
            sync()
    else:
        forward = _onnxruntime_forward(model, images)
    for _ in range(warmup):
        forward()
    times = []
    for _ in range(runs):
        start = timer()
        forward()
        times.append(timer() - start)
    return Timing.of(times)


def _onnxruntime_forward(model: torch.nn.Module, images: torch.Tensor) -> Callable[[], None]:
    import io

    try:
        import onnxruntime
    except ImportError:
        raise ImportError("runtime 'onnxruntime' needs `pip install onnxruntime onnx`") from None
    buffer = io.BytesIO()
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on the input-size checks: the size is fixed here
        torch.onnx.export(model, (images,), buffer, input_names=["images"], opset_version=17, dynamo=False)
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    feed = {"images": images.numpy()}
    return lambda: session.run(None, feed)



@dataclass
class BudgetResult:
    """Every measured candidate (sorted by φ) and the largest that fits (None: not even φ = 0 fits)."""

    family: str
    latency_ms: Optional[float]
    gmacs: Optional[float]
    batch: int
    runtime: str
    candidates: list[Candidate] = field(default_factory=list)
    best: Optional[Candidate] = None

    def table(self) -> str:
        """Markdown table: φ, name, input, BiFPN channels/layers, head layers, params, multiply-adds, latency."""
        lines = [f"| φ | model | input | BiFPN ch / layers | head layers | params (M) | multiply-adds (G) | "
                 f"latency, batch {self.batch}, {self.runtime} | fits |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for c in self.candidates:
            mark = "**largest that fits**" if c is self.best else ("yes" if c.fits else "no")
            latency = c.latency.describe() if c.latency is not None else "-"
            size = "×".join(str(s) for s in c.config.image_size)
            lines.append(f"| {c.phi:g} | {c.name} | {size} | {c.config.fpn_channels} / {c.config.fpn_layers} | "
                         f"{c.config.head_layers} | {c.params / 1e6:.2f} | {c.macs / 1e9:.2f} | {latency} | {mark} |")
        return "\n".join(lines)


def fit_budget(family: str = "d", latency_ms: Optional[float] = None, gmacs: Optional[float] = None,
               batch: int = 1, runtime: str = "torch", step: float = 0.25, runs: int = 7, warmup: int = 2,
               scaling: Optional[Mapping[str, float]] = None, measure: Optional[Callable[..., Timing]] = None,
               overrides: Optional[Mapping[str, Any]] = None, max_phi: Optional[float] = None,
               log: Callable[[str], None] = lambda line: None) -> BudgetResult:
    """Search the φ grid of ``family`` (``"d"`` or ``"lite"``) for the largest model within the budget.

    Give ``latency_ms`` (median forward latency at ``batch``, measured with ``measure`` — default
    :func:`measure_latency`) and/or ``gmacs`` (multiply-adds per forward, in 10^9). Each visited candidate is
    timed when a latency budget is given; with only ``gmacs`` the search counts and does not time. ``log`` gets
    one line per candidate as it is measured.
    """
    family = check_family(family)
    if latency_ms is None and gmacs is None:
        raise ValueError("give a budget: latency_ms and/or gmacs")
    if step <= 0 or (1 / step) != int(1 / step):
        raise ValueError(f"step must divide 1 (e.g. 0.25, 0.5, 1), got {step}")
    measure = measure or measure_latency
    top = MAX_PHI[family] if max_phi is None else min(float(max_phi), MAX_PHI[family])
    grid = [round(k * step, 6) for k in range(int(math.floor(top / step + 1e-9)) + 1)]
    result = BudgetResult(family, latency_ms, gmacs, batch, runtime)
    cache: dict[int, Candidate] = {}

    def fits(index: int) -> bool:
        if index not in cache:
            phi = grid[index]
            config = model_config(variant_name(phi, family), scaling=scaling, **dict(overrides or {}))
            params, macs = count_macs(config, batch)
            candidate = Candidate(phi, config, params, macs)
            ok = gmacs is None or macs / 1e9 <= gmacs
            if latency_ms is not None and ok:  # no need to time what already exceeds the multiply-add budget
                candidate.latency = measure(config, batch=batch, runs=runs, warmup=warmup, runtime=runtime)
                ok = candidate.latency.median * 1e3 <= latency_ms
            candidate.fits = ok
            cache[index] = candidate
            latency = candidate.latency.describe() if candidate.latency else "not timed"
            log(f"φ={phi:g} {config.name} {config.image_size[0]}px: {macs / 1e9:.2f} GMACs, {latency}: "
                f"{'fits' if ok else 'over budget'}")
        return bool(cache[index].fits)

    best: Optional[int] = None
    if fits(0):
        best, stride, miss = 0, int(round(1 / step)), None
        while best < len(grid) - 1:  # gallop by whole φ, the cost grows about 2x per step
            nxt = min(best + stride, len(grid) - 1)
            if fits(nxt):
                best = nxt
            else:
                miss = nxt
                break
        while miss is not None and miss - best > 1:  # bisect the grid between the last fit and the first miss
            mid = (best + miss) // 2
            if fits(mid):
                best = mid
            else:
                miss = mid
    result.candidates = [cache[i] for i in sorted(cache)]
    result.best = cache[best] if best is not None else None
    return result


def recipe_for(best: Candidate, recipe: Any, scaling: Optional[Mapping[str, float]] = None) -> Any:
    """The training config ``recipe`` (an OmegaConf config) with its model set to ``best``: the φ name, its
    image size (and ``scaling`` when the search used one); a packaged ImageNet backbone is switched to the one
    of the chosen row, or dropped when no packaged weights fit a fractional φ's backbone."""
    from omegaconf import OmegaConf

    from ...checkpoint.backbone import PACKAGED_BACKBONES

    cfg = OmegaConf.create(OmegaConf.to_container(recipe, resolve=False))
    model = cfg.get("model") or OmegaConf.create({})
    for key in ("phi", "scaling", "backbone", "backbone_width", "backbone_depth", "fpn_channels", "fpn_layers",
                "head_layers", "weights"):
        if key in model:
            del model[key]
    model["name"] = best.name
    model["image_size"] = list(best.config.image_size)
    if scaling is not None:
        model["scaling"] = {k: float(v) for k, v in dict(scaling).items()}
    if model.get("pretrained_backbone") in PACKAGED_BACKBONES:
        exact = best.config.backbone_width is None and best.config.backbone in PACKAGED_BACKBONES
        model["pretrained_backbone"] = best.config.backbone if exact else None
    cfg["model"] = model
    return cfg
