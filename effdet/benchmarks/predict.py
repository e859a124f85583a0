"""End-to-end predict latency: ours (Predictor) against the reference DetBenchPredict."""
from __future__ import annotations

from .common import fmt_time, reference_path, run_worker


def add_arguments(parser) -> None:
    parser.add_argument("--backend", nargs="+", help="predict: deployment paths (all, torch, onnxruntime, openvino, "
                        "runtime-onnxruntime, runtime-openvino, int8-onnxruntime, int8-openvino; not in all: "
                        "runtime-openvino-bf16, for CPUs with bfloat16 units)")
    parser.add_argument("--compare-reference", action="store_true", help="predict: alternate with the reference")
    parser.add_argument("--models", nargs="+", default=["efficientdet_d0", "efficientdet_lite0", "efficientdet_d1"],
                        help="predict --backend: variants at their native sizes")
    parser.add_argument("--calibration", help="predict --backend int8-*: calibration images (default: synthetic)")


def run(args) -> list[str]:
    if getattr(args, "backend", None) or getattr(args, "compare_reference", False):
        from . import deploy  # deployment paths vs the reference: effdet/benchmarks/deploy.py

        paths = deploy.PATHS if args.backend in (None, ["all"]) else args.backend
        return deploy.run(args.models, paths, args.compare_reference, reference_path(), args.threads, args.runs,
                          calibration=args.calibration)
    ours = run_worker("predict", "ours", args.runs, threads=args.threads)
    rows = ["| predict, D0 @512, batch 1 | latency | peak RSS (MiB) |", "|---|---|---|",
            f"| ours: Predictor.predict(640×480 image): letterbox, normalise, model, decode, NMS | "
            f"{fmt_time(ours['predict_s'])} | {ours['peak_rss_mib']:.0f} |"]
    if reference_path():
        ref = run_worker("predict", "ref", args.runs, "tf_efficientdet_d0", reference=True, threads=args.threads)
        rows.append(f"| reference DetBenchPredict (tensor in: no pre-processing) | {fmt_time(ref['predict_s'])} | "
                    f"{ref['peak_rss_mib']:.0f} |")
        rows.append(f"| ratio ours/reference | ×{ours['predict_s']['median'] / ref['predict_s']['median']:.2f} | |")
        ours_fwd = run_worker("forward", "ours", args.runs, "efficientdet_d0", 512, threads=args.threads)
        ref_fwd = run_worker("forward", "ref", args.runs, "tf_efficientdet_d0", 512, reference=True,
                             threads=args.threads)
        rows.append(f"| raw forward only: ours {fmt_time(ours_fwd['forward_s'])}, reference "
                    f"{fmt_time(ref_fwd['forward_s'])} | ×{ours_fwd['forward_s']['median'] / ref_fwd['forward_s']['median']:.2f} | |")
    for row in rows[2:]:
        print(row, flush=True)
    return rows
