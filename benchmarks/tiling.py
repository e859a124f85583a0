"""Tiled training of large images (issue 24): whole-image training against tiled training, each scored on whole images
by whole-image inference, sliced inference and sliced inference with a full-image pass.

    python tools/benchmark.py tiling [--data DIR | --num-train 16 --num-val 4 --data-seed 0] [--seeds 0 1]
        [--tile-size 256] [--overlap 0.2] [--steps 300] [--batch 8] [--warmup-steps N] [--score-threshold 0.1]
        [--merge nms] [--merge-metric iou] [--merge-threshold 0.5] [--max-detections 1000] [--threads 1]
        [--workers 1] [--out runs/tiling]

Data: the generated ``aerial`` kind (``tools/make_demo_data.py --kind aerial``: 1,500-3,000 px scenes with 50-400
objects of 12-40 px, 3 classes) under ``OUT/data/aerial`` (``--num-train`` / ``--num-val`` images from
``--data-seed``, the same for every seed), or ``--data DIR`` (a COCO-layout folder: ``train/``, ``val/``,
``annotations/instances_{train,val}.json``).

For each seed ``k`` (``--seeds``), two trainings through ``tools/train.py CONFIG`` (``--config``, default
``configs/demo.yaml``: EfficientDet-Lite0 at 256 px, the demo recipe), one at a time, each with ``--threads`` torch
threads and ``--workers`` loader workers, with the same optimiser steps x batch (``trainer.max_steps=STEPS``,
``data.batch_size=BATCH``, ``trainer.max_epochs=STEPS`` so that max_steps ends the run):

* arm ``whole``: today's pipeline, each training image letterboxed whole to 256 px;
* arm ``tiled``: ``data.tile_size=TILE data.tile_overlap=OVERLAP``: the training images cut into TILE px tiles
  (:mod:`effdet.data.tiles`).

The learning-rate schedule: its cosine follows ``trainer.max_steps`` (Lightning's ``estimated_stepping_batches``), but
its warm-up is ``optim.warmup_epochs`` epochs, and an epoch of tiles is many more steps than an epoch of 16 whole
images. So both arms get the same warm-up in steps, ``--warmup-steps`` (default: an eighth of ``--steps``, the demo
recipe's 1 warm-up epoch of 8): ``optim.warmup_epochs = WARMUP / steps per epoch`` of the arm (its training loader's
length, :class:`effdet.engine.DetectionDataModule`). Both arms train with ``eval.max_detections=MAXDET`` and
``eval.score_threshold=SCORE`` (the scoring's; at the config's 0.001 a barely trained model keeps thousands of boxes per
slice and the tiled arm's sliced validation takes minutes per image); validation during training is off
(``eval.every_n_epochs`` beyond the run) and ``eval.plots=false``: the run's own final validation (of the final
weights; the tiled arm's by sliced inference, ``eval.slice_size`` defaulting to the tile size) is part of its training
seconds but not of the table.

Each arm's final weights (``checkpoints/last.ckpt``; its EMA weights, which the predictor prefers) are then scored on
the val split of whole images with ``tools/eval.py`` three ways, with the same post-processing (score >=
``--score-threshold``, at most ``--max-detections`` per image, COCO maxDets ``max(100, MAXDET)``):

* ``whole``: whole-image inference (``eval.slice_size=null``: each image letterboxed to 256 px);
* ``sliced``: sliced inference (``eval.slice_size=TILE eval.slice_overlap=OVERLAP``, merged by ``--merge`` /
  ``--merge-metric`` / ``--merge-threshold``: by default nms / iou / 0.5, the library's, which validation during
  training uses too; intersection over the smaller box (``--merge-metric ios``) merges neighbours in crowded scenes);
* ``sliced_full``: the same plus the whole image (``eval.slice_full_image=true``).

The table's rows (:data:`ROWS`), per row the mean over the seeds and the per-seed values of AP, AP50 and APs, the
training seconds (the ``tools/train.py`` process, wall clock: start-up, fit, final validation) and the seconds per step
(the fit: from the run's ``config.yaml``, written just before the model is built, to its ``last.ckpt``, written when
fit ends, over the steps; the whole arm also writes ``last.ckpt`` at the end of each of its short epochs):

* whole-image training + whole-image inference: today's default pipeline;
* whole-image training + sliced inference: sliced inference alone;
* whole-image training + sliced inference + full-image pass;
* tiled training + whole-image inference: for completeness (a model that learnt objects at their size, shown them
  shrunk);
* tiled training + sliced inference: the issue's pipeline;
* tiled training + sliced inference + full-image pass.

The goal lines: tiled training + sliced inference AP50 mean / whole-image training + sliced inference AP50 mean, and
the same against today's default pipeline (the means over the seeds both rows have); the issue's goal is at least x2.

Output, under ``--out OUT``:

* ``OUT/<arm>/seed<k>.json`` as each training and its scoring finish (written atomically): ``scores`` (per inference
  mode the 12 COCO stats and ``seconds``), ``train_seconds``, ``fit_seconds`` and ``seconds_per_step``,
  ``global_step``, ``weights`` (``ema`` or ``model``), ``commit`` / ``dirty`` and ``settings``. A rerun skips the
  files that exist and refuses those recorded with other settings (:data:`COMPARED`), as the convergence protocol
  does (:mod:`benchmarks.protocol`), except files that differ only in the scoring settings: their trainings are
  scored again from their ``last.ckpt`` (no retraining) and the files rewritten.
* ``OUT/summary.json`` and, beside it, ``summary.md`` (the table, the goal lines, the command and the CPU line),
  rewritten after every training.
* ``OUT/work/<arm>/seed<k>/``: each training's folder (``run/``), its ``train.log`` and the scorings (``eval_<mode>/``
  with ``metrics.json``, and ``eval_<mode>.log``).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from benchmarks.convergence import ROOT, dataset_counts, dataset_paths, make_datasets, start_ours
from benchmarks.protocol import describe, git_commit, write_json_atomic

KIND = "aerial"
ARMS: dict[str, str] = {
    "whole": "today's pipeline: each training image letterboxed whole to the model's input",
    "tiled": "data.tile_size=TILE data.tile_overlap=OVERLAP: the training images cut into tiles",
}
MODES: dict[str, str] = {
    "whole": "whole-image inference",
    "sliced": "sliced inference",
    "sliced_full": "sliced inference + full-image pass",
}
TRAINING = {"whole": "whole-image training", "tiled": "tiled training"}
# The table's rows: (arm, inference mode), in the order printed.
ROWS: tuple[tuple[str, str], ...] = (("whole", "whole"), ("whole", "sliced"), ("whole", "sliced_full"),
                                     ("tiled", "whole"), ("tiled", "sliced"), ("tiled", "sliced_full"))
METRICS = ("AP", "AP50", "APs")
# The goal: (numerator row, denominator row), both AP50 means over the seeds both rows have; the issue asks x2.
RATIOS: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = ((("tiled", "sliced"), ("whole", "sliced")),
                                                               (("tiled", "sliced"), ("whole", "whole")))
RATIO_METRIC = "AP50"
GOAL = 2.0
RESERVED = ("data", "work")  # OUT/ folders that are not arms
# Settings that must agree for a seed file to count as this run's (a rerun refuses to mix others in).
COMPARED = ("arm", "config", "model", "image_size", "seed", "steps", "batch", "max_epochs", "warmup_steps",
            "tile_size", "tile_overlap", "data", "threads", "workers", "overrides", "scoring")


def row_label(arm: str, mode: str) -> str:
    """``"tiled training + sliced inference"``."""
    return f"{TRAINING[arm]} + {MODES[mode]}"


def row_key(arm: str, mode: str) -> str:
    return f"{arm}/{mode}"


# ------------------------------------------------------------------------------------------------- summary


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    """``numerator / denominator``; None when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return float(numerator) / float(denominator)


def summarize_tiling(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary of per-seed results (dicts with ``arm``, ``seed``, ``scores`` {mode: {AP, AP50, APs, ...}},
    ``train_seconds`` and ``seconds_per_step``): per row of :data:`ROWS` the seeds, and per metric (and the seconds)
    the per-seed values and :func:`benchmarks.protocol.describe` of them; per ratio of :data:`RATIOS` the AP50 means
    over the seeds both rows have and their quotient (None when the denominator is 0), and whether it reaches
    :data:`GOAL`."""
    by_arm: dict[str, dict[int, dict[str, Any]]] = {}
    for r in results:
        by_arm.setdefault(r["arm"], {})[int(r["seed"])] = r
    rows = []
    values: dict[tuple[str, str], dict[str, dict[int, float]]] = {}
    for arm, mode in ROWS:
        seeds = sorted(k for k, r in by_arm.get(arm, {}).items() if mode in (r.get("scores") or {}))
        per = {m: {k: float(by_arm[arm][k]["scores"][mode][m]) for k in seeds} for m in METRICS}
        for key in ("train_seconds", "seconds_per_step"):
            per[key] = {k: float(by_arm[arm][k][key]) for k in seeds if by_arm[arm][k].get(key) is not None}
        values[arm, mode] = per
        rows.append({"row": row_key(arm, mode), "label": row_label(arm, mode), "arm": arm, "inference": mode,
                     "seeds": seeds,
                     **{m: {"per_seed": {str(k): v for k, v in per[m].items()}, **describe(list(per[m].values()))}
                        for m in (*METRICS, "train_seconds", "seconds_per_step")}})
    ratios = []
    for top, bottom in RATIOS:
        a, b = values[top][RATIO_METRIC], values[bottom][RATIO_METRIC]
        seeds = sorted(set(a) & set(b))
        num = describe([a[k] for k in seeds])["mean"]
        den = describe([b[k] for k in seeds])["mean"]
        value = ratio(num, den)
        ratios.append({"numerator": row_key(*top), "denominator": row_key(*bottom), "metric": RATIO_METRIC,
                       "seeds": seeds, "numerator_mean": num, "denominator_mean": den, "ratio": value,
                       "per_seed": {str(k): ratio(a[k], b[k]) for k in seeds}, "goal": GOAL,
                       "met": None if value is None else value >= GOAL,
                       "line": goal_line(top, bottom, value, seeds)})
    return {"rows": rows, "ratios": ratios, "metric": RATIO_METRIC, "goal": GOAL}


def goal_line(top: tuple[str, str], bottom: tuple[str, str], value: Optional[float], seeds: Sequence[int]) -> str:
    """``"tiled training + sliced inference AP50 mean / whole-image training + sliced inference AP50 mean = x2.40
    (goal >= x2: met; seeds 0 1)"``."""
    shown = "—" if value is None else f"{value:.2f}"
    verdict = "no value (a mean is missing or the denominator is 0)" if value is None else (
        "met" if value >= GOAL else "not met")
    return (f"{row_label(*top)} {RATIO_METRIC} mean / {row_label(*bottom)} {RATIO_METRIC} mean = ×{shown} "
            f"(goal ≥ ×{GOAL:g}: {verdict}; seeds {' '.join(map(str, seeds)) or '—'})")


def format_tiling(summary: dict[str, Any]) -> str:
    """The markdown table of :func:`summarize_tiling`'s result, then its goal lines."""
    def cell(stats: dict[str, Any], digits: int = 3) -> str:
        if not stats["n"]:
            return "—"
        per = ", ".join(f"{v:.{digits}f}" for v in stats["per_seed"].values())
        return f"{stats['mean']:.{digits}f} ({per})"

    lines = ["| training + inference | seeds | AP mean (per seed) | AP50 mean (per seed) | APs mean (per seed) | "
             "training s mean (per seed) | s/step mean |", "|---|---|---|---|---|---|---|"]
    for row in summary["rows"]:
        step = row["seconds_per_step"]
        per_step = f"{step['mean']:.2f}" if step["n"] else "—"
        lines.append(f"| {row['label']} | {' '.join(map(str, row['seeds'])) or '—'} | {cell(row['AP'])} | "
                     f"{cell(row['AP50'])} | {cell(row['APs'])} | {cell(row['train_seconds'], 0)} | "
                     f"{per_step} |")
    return "\n".join(lines + [""] + [r["line"] for r in summary["ratios"]])


# ------------------------------------------------------------------------------------------------------ files


def result_path(out: Path, arm: str, seed: int) -> Path:
    return out / arm / f"seed{seed}.json"


def load_results(out: Path) -> list[dict[str, Any]]:
    """Every ``OUT/<arm>/seed<k>.json`` (arm and seed taken from the path)."""
    results = []
    for path in sorted(out.glob("*/seed*.json")):
        arm = path.parent.name
        if arm in RESERVED or not path.stem[4:].isdigit():
            continue
        results.append(dict(json.loads(path.read_text()), arm=arm, seed=int(path.stem[4:])))
    return results


def mismatch(stored: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The :data:`COMPARED` settings a seed file recorded differently."""
    old = stored.get("settings")
    if not isinstance(old, dict):
        return ["settings"]
    return [k for k in COMPARED if old.get(k) != settings.get(k)]


def write_summary(out: Path, header: str) -> str:
    """Summarise every seed file under ``out`` into ``summary.json`` and ``summary.md``; returns the table."""
    summary = summarize_tiling(load_results(out))
    write_json_atomic(out / "summary.json", dict(summary, header=header))
    table = format_tiling(summary)
    (out / "summary.md").write_text(f"{header}\n\n{table}\n")
    return table


# ------------------------------------------------------------------------------------------------------ runs


def scoring(args: argparse.Namespace) -> dict[str, Any]:
    """The post-processing every scoring uses (``slice_size`` etc. only in the sliced modes)."""
    return dict(score_threshold=args.score_threshold, max_detections=args.max_detections, slice_size=args.tile_size,
                slice_overlap=args.overlap, merge=args.merge, merge_metric=args.merge_metric,
                merge_threshold=args.merge_threshold)


def scoring_line(args: argparse.Namespace) -> str:
    return (f"scoring: score >= {args.score_threshold}, at most {args.max_detections} detections per image (COCO "
            f"maxDets {max(100, args.max_detections)}); sliced: {args.tile_size} px slices, overlap {args.overlap}, "
            f"merge {args.merge}/{args.merge_metric} {args.merge_threshold}")


def eval_overrides(args: argparse.Namespace, mode: str) -> list[str]:
    """The ``tools/eval.py`` overrides of inference mode ``mode``."""
    common = [f"eval.score_threshold={args.score_threshold}", f"eval.max_detections={args.max_detections}"]
    if mode == "whole":
        return [*common, "eval.slice_size=null"]
    return [*common, f"eval.slice_size={args.tile_size}", f"eval.slice_overlap={args.overlap}",
            f"eval.merge={args.merge}", f"eval.merge_metric={args.merge_metric}",
            f"eval.merge_threshold={args.merge_threshold}",
            f"eval.slice_full_image={str(mode == 'sliced_full').lower()}"]


def arm_overrides(arm: str, args: argparse.Namespace) -> list[str]:
    """The training overrides of ``arm`` besides the warm-up (which depends on the arm's steps per epoch)."""
    tiles = [f"data.tile_size={args.tile_size}", f"data.tile_overlap={args.overlap}"] if arm == "tiled" else []
    return [f"trainer.max_steps={args.steps}", f"data.batch_size={args.batch}",
            f"eval.max_detections={args.max_detections}", f"eval.score_threshold={args.score_threshold}",
            f"eval.every_n_epochs={args.steps + 1}", "eval.plots=false", *tiles]


@functools.lru_cache(maxsize=None)
def steps_per_epoch(config: str, root: Path, overrides: tuple[str, ...]) -> tuple[int, Any, Any]:
    """Optimiser steps per epoch of a training of ``config`` on ``root`` with ``overrides`` (the length of its
    training loader, as :class:`effdet.engine.DetectionDataModule` makes it: tiles when ``data.tile_size`` is set), and
    the resolved config. The seed does not change it (every epoch has the same number of tiles), so each arm builds its
    data module once, not once per seed."""
    from effdet.engine.datamodule import DetectionDataModule
    from effdet.engine.schema import load_train_config, resolve_model_config

    cfg = load_train_config(config, [f"data.root={root}", *overrides])
    model = resolve_model_config(cfg.model, num_classes=1)
    datamodule = DetectionDataModule(cfg.data, model.image_size, model.mean, seed=cfg.seed)
    return len(datamodule.train_dataloader()), cfg, model


def arm_settings(arm: str, seed: int, root: Path, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """What ``arm`` runs for ``seed``, spelt out (no machine paths: DATA stands for the data folder)."""
    config = Path(args.config).resolve()
    config_name = str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else str(config)
    overrides = arm_overrides(arm, args)
    per_epoch, cfg, model = steps_per_epoch(str(config), root, tuple(overrides))
    warmup = args.warmup_steps if args.warmup_steps is not None else round(args.steps / 8)
    overrides.append(f"optim.warmup_epochs={warmup / per_epoch!r}")
    image_size = list(model.image_size)
    return dict(arm=arm, runs=ARMS[arm], config=config_name, model=str(cfg.model.name), image_size=image_size,
                seed=seed, steps=args.steps, batch=args.batch, max_epochs=args.steps, warmup_steps=warmup,
                steps_per_epoch=per_epoch, tile_size=args.tile_size if arm == "tiled" else None,
                tile_overlap=args.overlap if arm == "tiled" else None, data=data, threads=args.threads,
                workers=args.workers, overrides=overrides, scoring=scoring(args),
                command=" ".join(["tools/train.py", config_name, "data.root=DATA", f"trainer.max_epochs={args.steps}",
                                  f"seed={seed}", f"data.num_workers={args.workers}", *overrides]))


def _final_step(checkpoint: Path) -> tuple[int, str]:
    """(global step, ``ema`` or ``model``: the weights the predictor reads) of a training checkpoint."""
    from effdet.checkpoint import load_checkpoint, read_weights

    state = load_checkpoint(checkpoint)
    return int(state.get("global_step", -1)), "ema" if read_weights(state).used_ema else "model"


def score(checkpoint: Path, root: Path, work: Path, mode: str, args: argparse.Namespace) -> Optional[dict[str, Any]]:
    """COCO stats of ``checkpoint`` on ``root``'s val split in inference mode ``mode`` (``tools/eval.py`` in a
    subprocess with ``--threads`` torch threads), plus ``seconds`` (its wall clock); None if it failed."""
    data = dataset_paths(root)
    out = work / f"eval_{mode}"
    command = [sys.executable, str(ROOT / "tools" / "eval.py"), "--weights", str(checkpoint), "--images",
               data["val_images"], "--annotations", data["val_annotations"], "--out", str(out),
               "--workers", str(args.workers), *eval_overrides(args, mode)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    started = time.time()
    with open(work / f"eval_{mode}.log", "w") as log:
        code = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    metrics = out / "metrics.json"
    if code != 0 or not metrics.exists():
        print(f"error: scoring {mode} failed (exit code {code}); see {work / f'eval_{mode}.log'}", file=sys.stderr,
              flush=True)
        return None
    from effdet.evaluation.report import STAT_KEYS

    stats = json.loads(metrics.read_text())
    return {**{k: stats[k] for k in STAT_KEYS}, "max_dets": stats.get("max_dets"),
            "seconds": round(time.time() - started, 1)}


def score_modes(checkpoint: Path, root: Path, work: Path, args: argparse.Namespace) -> Optional[dict[str, Any]]:
    """``{mode: COCO stats}`` of ``checkpoint`` in every inference mode (:data:`MODES`), or None if one failed."""
    scores = {}
    for mode in MODES:
        found = score(checkpoint, root, work, mode, args)
        if found is None:
            return None
        scores[mode] = found
        print(f"    {MODES[mode]}: AP {found['AP']:.3f}, AP50 {found['AP50']:.3f}, APs {found['APs']:.3f} "
              f"({found['seconds']:.0f} s)", flush=True)
    return scores


def run_one(arm: str, seed: int, root: Path, work: Path, settings: dict[str, Any],
            args: argparse.Namespace) -> Optional[dict[str, Any]]:
    """Train ``arm`` with ``seed`` on ``root`` in ``work`` (emptied first) and score its final weights three ways;
    the seed's result, or None if something failed."""
    if work.exists():
        shutil.rmtree(work)  # a half-finished earlier try
    work.mkdir(parents=True)
    started = time.time()
    code = start_ours(root, work, args.steps, seed, str(Path(args.config).resolve()), settings["overrides"],
                      args.threads, args.workers).wait()
    train_seconds = time.time() - started
    run = work / "run"
    checkpoint = run / "checkpoints" / "last.ckpt"
    if code != 0 or not checkpoint.exists():
        print(f"error: {arm} seed {seed} training failed (exit code {code}); see {work / 'train.log'}",
              file=sys.stderr, flush=True)
        return None
    step, weights = _final_step(checkpoint)
    if step != args.steps:
        print(f"error: {arm} seed {seed} stopped at step {step}, not {args.steps}; see {work / 'train.log'}",
              file=sys.stderr, flush=True)
        return None
    # fit: from config.yaml (written just before the model is built and fit starts) to last.ckpt (written when it ends)
    fit_seconds = checkpoint.stat().st_mtime - (run / "config.yaml").stat().st_mtime
    scores = score_modes(checkpoint, root, work, args)
    if scores is None:
        return None
    return {"arm": arm, "seed": seed, "steps": args.steps, "global_step": step, "weights": weights,
            "scores": scores, "train_seconds": round(train_seconds, 1), "fit_seconds": round(fit_seconds, 1),
            "seconds_per_step": round(fit_seconds / max(1, step), 3), **git_commit(), "settings": settings}


def _dataset(args: argparse.Namespace, out: Path) -> tuple[Path, dict[str, Any]]:
    if args.data:
        root = Path(args.data).resolve()
        seed = None
    else:
        root = make_datasets([KIND], out, args.num_train, args.num_val, args.data_seed, check_seed=True)[0]
        seed = args.data_seed
    dataset_paths(root)
    train, val = dataset_counts(root)
    return root, dict(name=root.name, num_train=train, num_val=val, data_seed=seed)


def run(args: argparse.Namespace) -> int:
    from effdet.benchmark.deploy import cpu_features

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    seeds = list(dict.fromkeys(args.seeds))
    if not seeds or min(seeds) < 0:
        return fail("--seeds needs seeds >= 0")
    for name in ("steps", "batch", "tile_size", "threads", "max_detections"):
        if getattr(args, name) < 1:
            return fail(f"--{name.replace('_', '-')} must be >= 1")
    if args.workers < 0 or (args.warmup_steps is not None and args.warmup_steps < 0):
        return fail("--workers and --warmup-steps must be >= 0")
    out = Path(args.out).resolve()
    try:
        root, data = _dataset(args, out)
        plan = [(seed, arm, arm_settings(arm, seed, root, data, args)) for seed in seeds for arm in ARMS]
    except (ValueError, FileNotFoundError) as error:  # ConfigError too
        return fail(str(error))
    todo, rescore, conflicts = [], [], []
    for seed, arm, settings in plan:
        target = result_path(out, arm, seed)
        if target.exists():
            stored = json.loads(target.read_text())
            bad = mismatch(stored, settings)
            checkpoint = out / "work" / arm / f"seed{seed}" / "run" / "checkpoints" / "last.ckpt"
            if bad == ["scoring"] and checkpoint.exists():  # the same training, scored otherwise: score it again
                rescore.append((seed, arm, settings, stored, checkpoint))
            elif bad:
                conflicts.append(f"{target} (recorded {bad} differently)")
        else:
            todo.append((seed, arm, settings))
    if conflicts:
        return fail("results of other settings are in the way; use another --out or remove them:\n  "
                    + "\n  ".join(conflicts))
    command = "python tools/benchmark.py tiling " + " ".join(args.argv)
    cpu = f"CPU: {cpu_features()}; {args.threads} torch thread(s), {args.workers} loader worker(s) per process"
    warmup = plan[0][2]["warmup_steps"]
    per_epoch = {arm: s["steps_per_epoch"] for _, arm, s in plan[:len(ARMS)]}
    train_line = (f"training: {plan[0][2]['config']} ({plan[0][2]['model']} @ {plan[0][2]['image_size']}), "
                  f"{args.steps} steps x batch {args.batch}, warm-up {warmup} steps (steps per epoch: "
                  + ", ".join(f"{a} {n}" for a, n in per_epoch.items())
                  + f"); tiles {args.tile_size} px, overlap {args.overlap}; data {data['name']} "
                  f"({data['num_train']} train / {data['num_val']} val images)")
    header = "\n".join([command, "", cpu, "", train_line, "", scoring_line(args)])
    print(f"{cpu}\n{train_line}\n{scoring_line(args)}", flush=True)
    print(f"tiling: {len(plan)} trainings, {len(plan) - len(todo)} already done ({len(rescore)} to score again), "
          f"{len(todo)} to run (one at a time), results in {out}", flush=True)
    failed = []
    for seed, arm, settings, stored, checkpoint in rescore:
        print(f"{arm} seed {seed}: trained with these settings, scored with others: scoring again ...", flush=True)
        scores = score_modes(checkpoint, root, checkpoint.parents[2], args)
        if scores is None:
            failed.append(f"{arm} seed {seed} (scoring)")
            continue
        write_json_atomic(result_path(out, arm, seed), {**stored, "scores": scores, **git_commit(),
                                                        "settings": {**stored["settings"], "scoring": settings["scoring"]}})
        write_summary(out, header)
    for index, (seed, arm, settings) in enumerate(todo, 1):
        print(f"[{index}/{len(todo)}] {arm} seed {seed} ...", flush=True)
        result = run_one(arm, seed, root, out / "work" / arm / f"seed{seed}", settings, args)
        if result is None:
            failed.append(f"{arm} seed {seed}")
            continue
        write_json_atomic(result_path(out, arm, seed), result)
        write_summary(out, header)
        print(f"    trained in {result['train_seconds']:.0f} s ({result['seconds_per_step']:.2f} s per step)",
              flush=True)
    print(f"\n{header}\n\n{write_summary(out, header)}")
    print(f"\nwritten: {out / 'summary.json'}, {out / 'summary.md'}")
    if failed:
        print(f"error: {len(failed)} training(s) failed (rerun to retry them): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, help="a COCO-layout folder (train/, val/, annotations/instances_"
                        "{train,val}.json); default: generate the aerial kind under OUT/data")
    parser.add_argument("--num-train", type=int, default=16, help="generated training images (default 16)")
    parser.add_argument("--num-val", type=int, default=4, help="generated validation images (default 4)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the generated data (fixed across seeds)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], metavar="K",
                        help="training seeds (default 0 1)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"), help="the training config "
                        "(default configs/demo.yaml)")
    parser.add_argument("--tile-size", type=int, default=256, help="tile (and slice) side in source pixels")
    parser.add_argument("--overlap", type=float, default=0.2, help="tile (and slice) overlap")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps of each training")
    parser.add_argument("--batch", type=int, default=8, help="images (or tiles) per step")
    parser.add_argument("--warmup-steps", type=int, default=None,
                        help="LR warm-up steps of both arms (default: an eighth of --steps)")
    parser.add_argument("--score-threshold", type=float, default=0.1)
    parser.add_argument("--merge", default="nms", choices=["nms", "nmm"],
                        help="merge of the slices' detections (default nms: the library's, as validation uses)")
    parser.add_argument("--merge-metric", default="iou", choices=["iou", "ios"], help="default iou (the library's)")
    parser.add_argument("--merge-threshold", type=float, default=0.5)
    parser.add_argument("--max-detections", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training / scoring process")
    parser.add_argument("--workers", type=int, default=1, help="data-loader workers per process")
    parser.add_argument("--out", default="runs/tiling")


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tools/benchmark.py tiling", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_arguments(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    import logging

    from effdet.logs import setup_console_logging

    setup_console_logging(logging.WARNING)
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
