"""Compound scaling as a tool.

    effdet-scale --latency-ms 200 [--batch 1] [--runtime torch|onnxruntime] [--family d|lite]
                 [--recipe configs/demo.yaml --out cfg.yaml]          # largest model within a latency budget
    effdet-scale --gmacs 3 [...]                                      # ... within a multiply-add budget
    effdet-scale search --config cfg.yaml --budget-steps 100 [--out runs/scale_search]   # α·β·γ grid search

Budget mode measures candidate φ on this machine (real timed forwards at each candidate's own resolution,
bisection on a φ grid), prints a table and marks the largest model that fits; with --out it writes the recipe
with that model. --runtime picks what runs the timed forwards (--backend, its old name, still works for one
release, with a deprecation message). Search mode trains a small grid of (α, β, γ) with α·β²·γ² ≈ 2 for the same
short budget each and reports them by val AP (table + plot); pass the best as ``model.scaling`` to drive the φ rule.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from ..logs import setup_console_logging


def _budget_parser() -> argparse.ArgumentParser:
    from ..modeling.scaling.budget import LATENCY_RUNTIMES

    parser = argparse.ArgumentParser(prog="effdet-scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=float, help="median forward latency budget in milliseconds")
    parser.add_argument("--gmacs", type=float, help="multiply-add budget per forward, in 10^9")
    parser.add_argument("--family", choices=["d", "lite"], default="d")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--runtime", choices=list(LATENCY_RUNTIMES), default=None,
                        help="what runs the timed forwards (default torch)")
    parser.add_argument("--backend", choices=list(LATENCY_RUNTIMES), default=None, help="deprecated: --runtime")
    parser.add_argument("--step", type=float, default=0.25, help="φ grid step (default 0.25)")
    parser.add_argument("--runs", type=int, default=7, help="timed forwards per candidate (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--max-phi", type=float, help="do not consider φ above this")
    parser.add_argument("--scaling", nargs=3, type=float, metavar=("ALPHA", "BETA", "GAMMA"),
                        help="searched coefficients instead of the official rows (see `effdet-scale search`)")
    parser.add_argument("--recipe", help="training config to base --out on (e.g. configs/demo.yaml)")
    parser.add_argument("--out", help="write the recipe with the chosen model here (needs --recipe)")
    parser.add_argument("--table", help="also write the table (markdown) to this file")
    return parser


def budget_main(argv: Sequence[str]) -> int:
    parser = _budget_parser()
    args = parser.parse_args(argv)
    setup_console_logging(logging.WARNING)
    if args.backend is not None:
        from ..deprecation import deprecated_form

        deprecated_form("--backend", "--runtime")
        if args.runtime not in (None, args.backend):
            parser.error(f"--runtime {args.runtime} and --backend {args.backend} (its deprecated name) disagree")
    args.runtime = args.runtime or args.backend or "torch"
    if args.latency_ms is None and args.gmacs is None:
        parser.error("give a budget: --latency-ms and/or --gmacs")
    if args.out and not args.recipe:
        parser.error("--out writes a training config based on a recipe: give --recipe too (e.g. configs/demo.yaml)")
    recipe = None
    if args.recipe:
        from ..engine.schema import ConfigError, load_train_config

        try:
            recipe = load_train_config(args.recipe)
        except ConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    import torch

    from ..modeling.scaling.budget import fit_budget, recipe_for

    if args.threads:
        torch.set_num_threads(args.threads)
    scaling = dict(zip(("alpha", "beta", "gamma"), args.scaling)) if args.scaling else None
    budget = " and ".join(part for part in (f"{args.latency_ms:g} ms" if args.latency_ms is not None else "",
                                            f"{args.gmacs:g} GMACs" if args.gmacs is not None else "") if part)
    print(f"# {args.family} family, budget {budget}, batch {args.batch}, runtime {args.runtime}, "
          f"{torch.get_num_threads()} torch threads, medians of {args.runs} runs after {args.warmup} warm-up")
    result = fit_budget(args.family, args.latency_ms, args.gmacs, batch=args.batch, runtime=args.runtime,
                        step=args.step, runs=args.runs, warmup=args.warmup, scaling=scaling, max_phi=args.max_phi,
                        log=lambda line: print("  " + line, flush=True))
    table = result.table()
    print("\n" + table)
    if args.table:
        from pathlib import Path

        Path(args.table).write_text(table + "\n")
    if result.best is None:
        print(f"\nnothing fits: even φ=0 ({result.candidates[0].name}) is over the budget", file=sys.stderr)
        return 1
    best = result.best
    print(f"\nlargest that fits: {best.name} (φ={best.phi:g}, {best.config.image_size[0]} px)")
    if args.out:
        from omegaconf import OmegaConf

        from ..fileio import atomic_path

        cfg = recipe_for(best, recipe, scaling)
        with atomic_path(args.out) as tmp:
            OmegaConf.save(cfg, tmp)
        print(f"training config written: {args.out}  (python tools/train.py {args.out})")
    return 0


def search_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="effdet-scale search", description="α·β·γ grid search at φ = 1 "
                                     "(α·β²·γ² ≈ 2): every candidate trains for the same number of steps with the "
                                     "recipe, from scratch, and is scored by val AP.")
    parser.add_argument("--config", required=True, help="training recipe; its model is the baseline (φ = 0)")
    parser.add_argument("--budget-steps", type=int, required=True, help="optimizer steps per candidate")
    parser.add_argument("--alphas", type=float, nargs="+", help="depth multipliers to try (default 1.1 1.2 1.3)")
    parser.add_argument("--betas", type=float, nargs="+", help="width multipliers to try (default 1.05 1.1 1.2)")
    parser.add_argument("--target", type=float, default=2.0, help="FLOPs factor α·β²·γ² (default 2)")
    parser.add_argument("--out", default="runs/scale_search", help="folder for the runs, table and plot")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the recipe (e.g. data.root=demo_data)")
    args = parser.parse_args(argv)
    from ..engine.schema import ConfigError, load_train_config
    from ..engine.scaling_search import DEFAULT_ALPHAS, DEFAULT_BETAS, coefficient_grid, run_search, search_table

    try:
        recipe = load_train_config(args.config, args.overrides)
        grid = coefficient_grid(args.alphas or DEFAULT_ALPHAS, args.betas or DEFAULT_BETAS, args.target)
    except (ConfigError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"# α·β·γ search: {len(grid)} candidates × {args.budget_steps} steps = "
          f"{len(grid) * args.budget_steps} training steps (+ {len(grid)} validations)", flush=True)
    rows = run_search(recipe, args.budget_steps, args.out, grid, log=lambda line: print(line, flush=True))
    print("\n" + search_table(rows, args.budget_steps))
    best = rows[0]
    print(f"\nbest: model.scaling={{alpha: {best.alpha:g}, beta: {best.beta:g}, gamma: {best.gamma:.4g}}}  "
          f"(table, plot and runs in {args.out}: search.md, search.png, search.json)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "search":
        return search_main(argv[1:])
    return budget_main(argv)


if __name__ == "__main__":
    sys.exit(main())
