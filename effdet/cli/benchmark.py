"""Benchmarks: model size/FLOPs/latency, training step, predict, post-processing, data loader, COCO eval.

    python tools/benchmark.py model [--variants efficientdet_d0 ...] [--runs 10] [--threads 2]
    python tools/benchmark.py train  [--runs 10]     # ours vs the reference effdet, D0 @512 batch 2
    python tools/benchmark.py predict [--runs 20]    # end-to-end predict, ours vs DetBenchPredict
    python tools/benchmark.py postprocess | loader | cocoeval
    python tools/benchmark.py all [--out FILE]
    python tools/benchmark.py scaling --plot scaling.png [--step 0.5] [--time-up-to 3]   # not part of `all`
    python tools/benchmark.py convergence --compare-reference [--epochs 16] [--data DIR ...]   # val AP per epoch

Every figure is a median over --runs runs after warm-up, with the spread (min–max). Each measurement
runs in a fresh subprocess so its peak memory (max RSS) is its own. The reference package is imported
only in those subprocesses, from EFFDET_PARITY_PATH or .parity/ (`make parity-env`), never in ours.
Each subcommand is a module of effdet.benchmarks with a `run(args) -> list[str]` (markdown rows), registered in
SUBCOMMANDS below: a new benchmark is a new module and one line here.
FLOPs are counted by instrumenting the real forward (torch.utils.flop_counter) and reported as
multiply-adds (the counter's FLOPs / 2), as the paper counts them.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Optional, Sequence

# name -> module of effdet.benchmarks with run(args) -> list[str] (and optionally add_arguments(parser))
SUBCOMMANDS: dict[str, str] = {
    "model": "effdet.benchmarks.model",
    "train": "effdet.benchmarks.train",
    "predict": "effdet.benchmarks.predict",
    "postprocess": "effdet.benchmarks.postprocess",
    "loader": "effdet.benchmarks.loader",
    "cocoeval": "effdet.benchmarks.cocoeval",
    "scaling": "effdet.benchmarks.scaling",
}
# long-running benchmarks that `all` leaves out (run them by name)
NOT_IN_ALL: frozenset[str] = frozenset({"scaling"})
# benchmarks with a command line of their own: `tools/benchmark.py NAME ...` runs the module's main(argv)
STANDALONE: dict[str, str] = {
    "convergence": "effdet.benchmarks.convergence",  # training quality per epoch, ours vs the reference
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="effdet-benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=[*SUBCOMMANDS, *STANDALONE, "all"])
    parser.add_argument("--variants", nargs="+", default=["efficientdet_d0", "efficientdet_d1", "efficientdet_d2",
                                                          "efficientdet_d3", "efficientdet_lite0"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the tables (markdown) to this file")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in STANDALONE:
        return int(importlib.import_module(STANDALONE[argv[0]]).main(argv[1:]) or 0)
    parser = build_parser()
    known, _ = parser.parse_known_args(argv)
    selected = [n for n in SUBCOMMANDS if n not in NOT_IN_ALL] if known.what == "all" else [known.what]
    modules = {name: importlib.import_module(SUBCOMMANDS[name]) for name in selected}
    for module in modules.values():  # subcommand-specific options
        if hasattr(module, "add_arguments"):
            module.add_arguments(parser)
    args = parser.parse_args(argv)
    print(f"# torch threads {args.threads}; medians of {args.runs} runs after warm-up; (min–max)")
    tables = []
    for name, module in modules.items():
        print(f"\n## {name}")
        tables.append("\n".join(module.run(args)))
    if args.out:
        Path(args.out).write_text("\n\n".join(tables) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
