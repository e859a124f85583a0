"""Model size, multiply-adds and CPU latency per variant, against the official figures."""
from __future__ import annotations

from .common import fmt_time, run_worker
from .figures import OFFICIAL


def run(args) -> list[str]:
    rows = ["| variant | input | params (M) | official | multiply-adds (G) | paper | CPU latency, batch 1 |",
            "|---|---|---|---|---|---|---|"]
    for name in args.variants:
        r = run_worker("model", name, args.runs, threads=args.threads)
        official = OFFICIAL.get(name)
        params, paper = (official.params_m, official.macs_b) if official else (None, None)
        size = "×".join(str(s) for s in r["image_size"])
        rows.append(f"| {name} | {size} | {r['params'] / 1e6:.2f} | {params or '-'} | {r['macs'] / 1e9:.2f} | "
                    f"{paper or '-'} | {fmt_time(r['latency_s'])} |")
        print(rows[-1], flush=True)
    return rows
