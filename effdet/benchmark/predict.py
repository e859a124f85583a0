"""End-to-end predict latency of our Predictor; with ``--runtime``, every deployment path (effdet.benchmark.deploy)."""
from __future__ import annotations

from typing import Optional, Sequence

from .common import fmt_time, run_worker

HEADER = ["| predict, D0 @512, batch 1 | latency | peak RSS (MiB) |", "|---|---|---|"]


def add_arguments(parser) -> None:
    parser.add_argument("--runtime", nargs="+", help="predict: deployment paths (all, torch, onnxruntime, openvino, "
                        "runtime-onnxruntime, runtime-openvino, int8-onnxruntime, int8-openvino; not in all: "
                        "runtime-openvino-bf16, for CPUs with bfloat16 units)")
    parser.add_argument("--backend", nargs="+", dest="deprecated_backend", help="deprecated: --runtime")
    parser.add_argument("--models", nargs="+", default=["efficientdet_d0", "efficientdet_lite0", "efficientdet_d1"],
                        help="predict --runtime: variants at their native sizes")
    parser.add_argument("--calibration", help="predict --runtime int8-*: calibration images (default: synthetic)")


def requested_paths(args) -> Optional[Sequence[str]]:
    """The deployment paths ``--runtime`` names, or None when it is not given; ``--backend``, its old name, still
    works with a deprecation message."""
    if getattr(args, "deprecated_backend", None):
        from ..deprecation import deprecated_form

        deprecated_form("--backend", "--runtime")
        return args.runtime or args.deprecated_backend
    return getattr(args, "runtime", None)


def runtime_paths(runtime: Optional[Sequence[str]]) -> Sequence[str]:
    """The deployment paths of ``--runtime`` (``all`` or none: every path of ``--runtime all``)."""
    from .deploy import PATHS

    return PATHS if runtime in (None, ["all"]) else runtime


def predictor_row(args) -> tuple[str, dict]:
    """(the markdown row, the measurement) of our Predictor, D0 @512 on a 640×480 image."""
    ours = run_worker("predict", args.runs, threads=args.threads)
    return (f"| ours: Predictor.predict(640×480 image): letterbox, normalise, model, decode, NMS | "
            f"{fmt_time(ours['predict_s'])} | {ours['peak_rss_mib']:.0f} |", ours)


def run(args) -> list[str]:
    paths = requested_paths(args)
    if paths:
        from . import deploy  # every deployment path, alternating: effdet/benchmark/deploy.py

        return deploy.run(args.models, runtime_paths(paths), threads=args.threads, rounds=args.runs,
                          calibration=args.calibration)
    row, _ = predictor_row(args)
    print(row, flush=True)
    return HEADER + [row]
