"""End-to-end predict latency: ours (Predictor) against the reference DetBenchPredict."""
from __future__ import annotations

from .common import fmt_time, reference_path, run_worker


def run(args) -> list[str]:
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
