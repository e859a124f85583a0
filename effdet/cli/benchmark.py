"""Benchmarks of your own model: size/multiply-adds/latency, predict (each runtime), post-processing, data loader.

    effdet-benchmark model [--variants efficientdet_d0 ...] [--runs 10] [--threads 2]
    effdet-benchmark predict [--runs 20]     # end-to-end Predictor.predict, D0 @512
    effdet-benchmark predict --runtime all [--models efficientdet_d0 ...]   # torch, onnxruntime, OpenVINO, int8, ...
    effdet-benchmark postprocess | loader
    effdet-benchmark all [--out FILE]
    effdet-benchmark scaling --plot scaling.png [--step 0.5] [--time-up-to 3]   # not part of `all`

Every figure is a median over --runs runs after warm-up, with the spread (min–max). Each measurement
runs in a fresh subprocess so its peak memory (max RSS) is its own. FLOPs are counted by instrumenting the real
forward (torch.utils.flop_counter) and reported as multiply-adds (the counter's FLOPs / 2), as the paper counts them.
Each subcommand is a module of effdet.benchmark with a `run(args) -> list[str]` (markdown rows), registered in
SUBCOMMANDS below: a new benchmark is a new module and one line here.

Comparisons with the reference effdet and other tools (training step, COCO-eval backends, convergence,
predict --compare-reference) run from a checkout: `python tools/benchmark.py --help` (the repository's benchmarks/).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import AbstractSet, Mapping, Optional, Sequence

# name -> module with run(args) -> list[str] (and optionally add_arguments(parser))
SUBCOMMANDS: dict[str, str] = {
    "model": "effdet.benchmark.model",
    "predict": "effdet.benchmark.predict",
    "postprocess": "effdet.benchmark.postprocess",
    "loader": "effdet.benchmark.loader",
    "scaling": "effdet.benchmark.scaling",
}
# long-running benchmarks that `all` leaves out (run them by name)
NOT_IN_ALL: frozenset[str] = frozenset({"scaling"})
# benchmarks with a command line of their own: `NAME ...` runs the module's main(argv) (tools/benchmark.py has one)
STANDALONE: dict[str, str] = {}


def build_parser(subcommands: Mapping[str, str] = SUBCOMMANDS, standalone: Mapping[str, str] = STANDALONE,
                 prog: str = "effdet-benchmark", description: str = __doc__) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=[*subcommands, *standalone, "all"])
    parser.add_argument("--variants", nargs="+", default=["efficientdet_d0", "efficientdet_d1", "efficientdet_d2",
                                                          "efficientdet_d3", "efficientdet_lite0"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the tables (markdown) to this file")
    return parser


def main(argv: Optional[Sequence[str]] = None, *, subcommands: Mapping[str, str] = SUBCOMMANDS,
         not_in_all: AbstractSet[str] = NOT_IN_ALL, standalone: Mapping[str, str] = STANDALONE,
         prog: str = "effdet-benchmark", description: str = __doc__) -> int:
    """Run the benchmark ``argv[0]`` names (or ``all``). ``tools/benchmark.py`` runs this with more subcommands."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] and argv[0] in standalone:
        return int(importlib.import_module(standalone[argv[0]]).main(argv[1:]) or 0)
    parser = build_parser(subcommands, standalone, prog, description)
    known, _ = parser.parse_known_args(argv)
    selected = [n for n in subcommands if n not in not_in_all] if known.what == "all" else [known.what]
    modules = {name: importlib.import_module(subcommands[name]) for name in selected}
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
