"""One training step (D0 @512, batch 2): ours against the reference effdet."""
from __future__ import annotations

from .common import fmt_time, reference_path, run_ours, run_reference


def run(args) -> list[str]:
    ours = run_ours("train", "ours", args.runs, threads=args.threads)
    rows = ["| training step, D0 @512, batch 2 | step time | images/s | peak RSS (MiB) |", "|---|---|---|---|",
            f"| ours (efficientdet_d0) | {fmt_time(ours['step_s'])} | {ours['images_per_s']:.2f} | "
            f"{ours['peak_rss_mib']:.0f} |"]
    if reference_path():
        ref = run_reference("train", "ref", args.runs, "tf_efficientdet_d0", threads=args.threads)
        rows.append(f"| reference effdet (tf_efficientdet_d0, DetBenchTrain) | {fmt_time(ref['step_s'])} | "
                    f"{ref['images_per_s']:.2f} | {ref['peak_rss_mib']:.0f} |")
        rows.append(f"| ratio ours/reference | | throughput ×{ours['images_per_s'] / ref['images_per_s']:.2f} | "
                    f"memory ×{ours['peak_rss_mib'] / ref['peak_rss_mib']:.2f} |")
    for row in rows[2:]:
        print(row, flush=True)
    return rows
