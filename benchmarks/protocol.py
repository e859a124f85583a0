"""The seed protocol of the convergence benchmark (issue 25): several seeds per arm, compared seed by seed.

    python tools/benchmark.py convergence --seeds N [--seed-list K ...] [--arms ours ours_reference_init reference]
        [--variant NAME KEY=VALUE ...] [--kinds small similar] [--sizes small=200/60 ...] [--epochs 16] [--threads 1]
        [--workers 1] --out RESULTS

One seed per side cannot tell two pipelines apart on these small sets: the random draw of the BiFPN/head init alone
moves the final AP by several points (docs/convergence.md). So every comparison runs seeds ``0..N-1`` (or
``--seed-list``) of each *arm*, ONE training at a time (never two at once, so that the timings and the shared CPU
stay comparable), each with ``--threads`` torch threads and ``--workers`` loader workers.

Arms (:data:`ARMS`, the one table of what each arm runs). Everything else is identical between arms: the model
(``tf_efficientdet_lite0``, the reference's architecture), the recipe (:data:`benchmarks.convergence.RECIPE`, which
``configs/demo.yaml`` matches), the epochs, the data (generated once per kind from ``--data-seed``, default 0, the
same for every seed), and the seed ``k``, which sets the training's data order and augmentation (and the init of the
arms that draw their own).

Variants: ``--variant NAME KEY=VALUE [KEY=VALUE ...]`` (repeatable) adds the arm ``NAME``: the same as ``ours`` plus
those overrides of our config, the one change a comparison measures. It is run by default with the other arms (or
named in ``--arms``), and the summary pairs it seed by seed with every other arm, ``ours`` included. Each seed file
records the arm's overrides and the digest of its resolved training config (``config_digest``, machine paths left
out), so a variant run under another arm's name, or an arm whose defaults changed in the code, is refused, not mixed
in (files written before the digest was recorded are not checked for it). A variant made of ``recipe.KEY=VALUE``
overrides instead (e.g. ``--variant reference_lr4 recipe.lr=0.004``) is the ``reference`` arm with those keys of its
recipe (:data:`benchmarks.convergence.RECIPE`) changed, so a change of the shared recipe can be measured on both
programs; one variant changes one program, never both.

Kinds: the generated sets of ``tools/make_demo_data.py`` with their own sizes (``KIND_SIZES``: shapes 200 / 60,
small 200 / 60, similar 400 / 100 train / val images; ``--sizes KIND=TRAIN/VAL`` changes one), or ``--data DIR``.

Output, under ``--out RESULTS``:

* ``RESULTS/<kind>/<arm>/seed<k>.json`` as each training finishes (written to a temporary file, then renamed):
  ``final_AP``, ``final_AP50``, ``AP_epoch8`` (null with fewer than 8 epochs), the per-epoch ``curve``
  (``epoch``, ``AP``, ``AP50`` of the EMA weights on val), ``seconds``, ``commit`` (git, null outside a checkout;
  ``dirty`` when the tree has changes) and ``settings`` (the arm's spelled-out settings). A rerun skips the seeds
  whose file exists, so a long protocol resumes where it stopped and can be read partway; it refuses to mix in a
  file whose recorded settings differ from this run's.
* ``RESULTS/summary.json``, rewritten after every seed, from every seed file under RESULTS (see
  :func:`summarize_protocol`), also printed as a markdown table (and written beside it as ``summary.md``).
* ``RESULTS/data/<kind>/`` the generated data, ``RESULTS/work/<kind>/<arm>/seed<k>/`` each training's folder and log.

The summary, per kind: per arm, ``n``, ``mean``, ``std`` (sample standard deviation, ddof=1; null for n < 2),
``min`` and ``max`` of the final AP and of the epoch-8 AP; per pair of arms (``a - b``, in :data:`ARMS` order), the
**paired** differences: only the seeds both arms have, ``a``'s AP minus ``b``'s at the same seed, with their
``seeds``, ``differences``, ``n``, ``mean``, ``std``, ``min``, ``max`` and ``exceeds_spread``.

The decision rule: ``exceeds_spread`` is true when ``|mean of the paired differences| > std of the paired
differences`` (sample std, ddof=1), false when not, null for n < 2. It is deliberately modest: with n paired seeds it
means a paired t statistic above sqrt(n) (2.2 for 5 seeds), i.e. the mean difference is larger than what one seed
typically moves it; "not exceeded" means the seeds cannot tell the two arms apart, not that they are equal.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Optional, Sequence

from benchmarks.convergence import (RECIPE, ROOT, dataset_counts, dataset_paths, make_datasets, ours_curve,
                                    parse_sizes, reference_backbone_weights, reference_curve, reference_folder,
                                    reference_initial_weights, start_ours, start_reference, write_reference_spec)

EPOCH_MARK = 8  # the mid-training epoch the summary reports besides the final one
RESERVED = ("data", "work")  # RESULTS/ folders that are not kinds
RECIPE_PREFIX = "recipe."  # a variant's override of the reference's recipe (RECIPE), e.g. recipe.lr=0.004


@dataclass(frozen=True)
class Arm:
    program: str  # "ours": tools/train.py; "reference": the reference effdet 0.4.1 (benchmarks/reference_train.py)
    init: str  # "own": the program's own init drawn from seed k; "reference": the reference's initial weights, seed k
    runs: str  # what it runs, spelt out


# The arms: name -> what it runs (everything not named here is the same for every arm, see the module docstring).
ARMS: dict[str, Arm] = {
    "ours": Arm("ours", "own", "tools/train.py CONFIG (default configs/demo.yaml) model.name=tf_efficientdet_lite0 "
                "seed=k: our pipeline from our own init (ImageNet backbone + BiFPN/heads drawn from seed k)"),
    "ours_reference_init": Arm("ours", "reference", "the same as `ours`, plus model.weights=INIT: INIT is what the "
                               "reference's seed-k run starts from (reference_train.py init, spec seed k; classes in "
                               "our order)"),
    "reference": Arm("reference", "reference", "the reference effdet 0.4.1 trained by benchmarks/reference_train.py "
                     "(its DetBenchTrain, loss, transforms, DetBenchPredict) with spec seed k, from its own init"),
}
# Settings that must agree for a seed file to count as this run's (a rerun refuses to mix others in).
COMPARED = ("program", "init", "model", "image_size", "epochs", "seed", "data", "config", "overrides", "recipe",
            "threads", "workers", "config_digest")
# Compared only when the stored file has them (recorded since they were added).
RECORDED_LATER = ("config_digest",)


def variant_arms(variants: Sequence[Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """``--variant NAME KEY=VALUE ...`` (each a list: name, then overrides) as ``{name: overrides}``.

    Raises ValueError for a name that is taken (an arm of :data:`ARMS`, a reserved folder, another variant), is not
    a plain folder name, or comes without overrides."""
    arms: dict[str, tuple[str, ...]] = {}
    for name, *overrides in variants:
        if name in ARMS or name in RESERVED or name in arms:
            raise ValueError(f"--variant {name}: the name is taken (arms: {', '.join(ARMS)}; reserved: "
                             f"{', '.join(RESERVED)}; variants so far: {', '.join(arms) or 'none'})")
        if not name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"--variant {name}: a name is letters, digits, '_' and '-' (it names a results folder)")
        if not overrides or any("=" not in o for o in overrides):
            raise ValueError(f"--variant {name}: give the overrides that make it, as section.key=value "
                             "(e.g. --variant filtered data.train_resize=random_filtered)")
        recipe = [o for o in overrides if o.startswith(RECIPE_PREFIX)]
        if recipe and len(recipe) != len(overrides):
            raise ValueError(f"--variant {name}: either overrides of our config or {RECIPE_PREFIX}KEY=VALUE "
                             "(the reference's recipe), not both: a variant changes one program")
        unknown = [f"{RECIPE_PREFIX}{key}" for key in recipe_overrides(recipe) if key not in RECIPE]
        if unknown:
            raise ValueError(f"--variant {name}: {unknown} name no key of the reference's recipe "
                             f"({', '.join(RECIPE)})")
        arms[name] = tuple(overrides)
    return arms


def recipe_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``recipe.KEY=VALUE`` overrides as ``{KEY: value}`` (values read as YAML: 0.004, [0.5, 1.5], true)."""
    import yaml

    pairs = (o[len(RECIPE_PREFIX):].split("=", 1) for o in overrides if o.startswith(RECIPE_PREFIX))
    return {key: yaml.safe_load(value) for key, value in pairs}


def arm_spec(arm: str, variants: dict[str, tuple[str, ...]]) -> Arm:
    """The :class:`Arm` of a name of :data:`ARMS` or of a variant: ``ours`` plus its overrides, or ``reference``
    with its recipe changed (overrides ``recipe.KEY=VALUE``)."""
    if arm in ARMS:
        return ARMS[arm]
    if recipe_overrides(variants[arm]):
        return Arm("reference", "reference", f"the same as `reference`, plus {' '.join(variants[arm])}")
    return Arm("ours", "own", f"the same as `ours`, plus {' '.join(variants[arm])}")


@functools.lru_cache(maxsize=None)
def _config_digest(config: str, overrides: tuple[str, ...]) -> str:
    import hashlib

    from omegaconf import OmegaConf

    from effdet.engine.schema import load_train_config

    cfg = load_train_config(config, [*overrides, "data.root=DATA", "output_dir=OUT"])
    return hashlib.sha256(OmegaConf.to_yaml(cfg, sort_keys=True).encode()).hexdigest()[:16]


def config_digest(config: str, overrides: Sequence[str]) -> str:
    """sha256 (16 hex digits) of the resolved training config of ``config`` + ``overrides`` with the machine's
    paths (data.root, output_dir) left out: what the code's defaults make of the arm's settings. Resolved once per
    arm, not once per seed."""
    return _config_digest(str(config), tuple(overrides))


# ------------------------------------------------------------------------------------------------- statistics


def describe(values: Sequence[float]) -> dict[str, Any]:
    """n, mean, sample std (ddof=1; None for n < 2), min, max of ``values`` (all None but n when empty)."""
    values = [float(v) for v in values]
    n = len(values)
    return {"n": n, "mean": statistics.fmean(values) if n else None,
            "std": statistics.stdev(values) if n >= 2 else None,
            "min": min(values) if n else None, "max": max(values) if n else None}


def paired(a: dict[int, Optional[float]], b: dict[int, Optional[float]]) -> dict[str, Any]:
    """Paired differences ``a[k] - b[k]`` over the seeds ``k`` both have a value for (the others are left out), their
    statistics (:func:`describe`) and ``exceeds_spread``: ``|mean| > std`` of the differences (None for n < 2)."""
    seeds = sorted(k for k in set(a) & set(b) if a[k] is not None and b[k] is not None)
    differences = [float(a[k]) - float(b[k]) for k in seeds]
    stats = describe(differences)
    exceeds = None if stats["std"] is None else abs(stats["mean"]) > stats["std"]
    return {"seeds": seeds, "differences": differences, **stats, "exceeds_spread": exceeds}


def arm_order(names: Sequence[str]) -> list[str]:
    """``names`` in :data:`ARMS` order, unknown ones after, sorted."""
    known = [a for a in ARMS if a in names]
    return known + sorted(set(names) - set(known))


def summarize_protocol(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The summary of per-seed results (dicts with ``kind``, ``arm``, ``seed``, ``final_AP``, ``AP_epoch8``)."""
    metrics = ("final_AP", "AP_epoch8")
    table: dict[str, dict[str, dict[str, dict[int, Optional[float]]]]] = {}
    for r in results:
        arm = table.setdefault(r["kind"], {}).setdefault(r["arm"], {m: {} for m in metrics})
        for m in metrics:
            arm[m][int(r["seed"])] = r.get(m)
    kinds = {}
    for kind in sorted(table):
        arms = arm_order(list(table[kind]))
        kinds[kind] = {
            "arms": {a: {"seeds": sorted(table[kind][a]["final_AP"]),
                         **{m: describe([v for v in table[kind][a][m].values() if v is not None]) for m in metrics}}
                     for a in arms},
            "pairs": {f"{a} - {b}": {"a": a, "b": b, **{m: paired(table[kind][a][m], table[kind][b][m])
                                                       for m in metrics}}
                      for a, b in combinations(arms, 2)},
        }
    return {"rule": "exceeds_spread: |mean of the paired differences (a - b, same seed)| > their sample std (ddof=1); "
                    "null for fewer than 2 common seeds",
            "epoch_mark": EPOCH_MARK, "kinds": kinds}


def format_summary(summary: dict[str, Any]) -> str:
    """Markdown tables of :func:`summarize_protocol`'s result."""
    def f(v, digits=3):
        return "—" if v is None else f"{v:.{digits}f}"

    def stat(s):
        return f"{f(s['mean'])} ± {f(s['std'])} [{f(s['min'])}, {f(s['max'])}]" if s["n"] else "—"

    def diff(p):
        if not p["n"]:
            return "—"
        verdict = {True: "yes", False: "no", None: "—"}[p["exceeds_spread"]]
        return f"{p['mean']:+.3f} ± {f(p['std'])} [{p['min']:+.3f}, {p['max']:+.3f}], {verdict}"

    e = summary.get("epoch_mark", EPOCH_MARK)
    lines = [f"| kind | arm | n | final AP: mean ± std [min, max] | AP at epoch {e}: mean ± std [min, max] |",
             "|---|---|---|---|---|"]
    for kind, k in summary["kinds"].items():
        for arm, s in k["arms"].items():
            lines.append(f"| {kind} | {arm} | {s['final_AP']['n']} | {stat(s['final_AP'])} | {stat(s['AP_epoch8'])} |")
    lines += ["", "Paired differences a - b (same seeds): mean ± std [min, max], |mean| > std?",
              "", f"| kind | a - b | n | seeds | final AP | AP at epoch {e} |", "|---|---|---|---|---|---|"]
    for kind, k in summary["kinds"].items():
        for name, p in k["pairs"].items():
            seeds = " ".join(map(str, p["final_AP"]["seeds"])) or "—"
            lines.append(f"| {kind} | {name} | {p['final_AP']['n']} | {seeds} | {diff(p['final_AP'])} | "
                         f"{diff(p['AP_epoch8'])} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ files


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as JSON to ``path`` via a temporary file in the same folder and a rename (never half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1))
    os.replace(tmp, path)


def result_path(out: Path, kind: str, arm: str, seed: int) -> Path:
    return out / kind / arm / f"seed{seed}.json"


def load_results(out: Path) -> list[dict[str, Any]]:
    """Every ``RESULTS/<kind>/<arm>/seed<k>.json`` (kind, arm and seed taken from the path)."""
    results = []
    for path in sorted(out.glob("*/*/seed*.json")):
        kind, arm = path.parent.parent.name, path.parent.name
        if kind in RESERVED or not path.stem[4:].isdigit():
            continue
        result = json.loads(path.read_text())
        results.append(dict(result, kind=kind, arm=arm, seed=int(path.stem[4:])))
    return results


def git_commit() -> dict[str, Any]:
    """The checkout's commit and whether its tracked files have changes (None outside a git checkout)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True,
                                timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True, timeout=60).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


# ------------------------------------------------------------------------------------------------------ runs


def arm_settings(arm: str, seed: int, data: dict[str, Any], args: argparse.Namespace, overrides: Sequence[str],
                 variants: Optional[dict[str, tuple[str, ...]]] = None) -> dict[str, Any]:
    """What arm ``arm`` runs for ``seed``, spelt out (no machine paths: DATA and INIT stand for them)."""
    variants = variants or {}
    spec = arm_spec(arm, variants)
    recipe_changes = recipe_overrides(variants.get(arm, ()))
    image_size = recipe_changes.get("image_size") or args.image_size or RECIPE["image_size"]  # the arm's own first
    settings: dict[str, Any] = dict(arm=arm, runs=spec.runs, program=spec.program, init=spec.init,
                                    model=RECIPE["model"], image_size=image_size, epochs=args.epochs, seed=seed,
                                    data=data, threads=args.threads, workers=args.workers)
    if spec.program == "ours":
        config = Path(args.config).resolve()
        config = str(config.relative_to(ROOT)) if config.is_relative_to(ROOT) else str(config)
        ours = [f"model.name={RECIPE['model']}", *([f"model.image_size={args.image_size}"] if args.image_size else []),
                *overrides, *variants.get(arm, ())]
        settings.update(config=config, overrides=ours, config_digest=config_digest(args.config, ours), command=" ".join(
            ["tools/train.py", config, "data.root=DATA", f"trainer.max_epochs={args.epochs}", f"seed={seed}",
             f"data.num_workers={args.workers}", *ours, *(["model.weights=INIT"] if spec.init == "reference" else [])]))
        if spec.init == "reference":
            settings["init_from"] = f"reference_train.py init SPEC (seed {seed}), SPEC = the recipe on DATA"
    else:
        settings.update(recipe={**RECIPE, **recipe_changes, "image_size": image_size},
                        command=f"reference_train.py train SPEC (the recipe on DATA, seed {seed})")
    return settings


def run_one(arm: str, seed: int, root: Path, work: Path, settings: dict[str, Any], args: argparse.Namespace,
            folder: Optional[Path], weights: Optional[Path]) -> Optional[dict[str, Any]]:
    """Train ``arm`` with ``seed`` on ``root`` in ``work`` (emptied first); the seed's result, or None if it failed."""
    spec = Arm(settings["program"], settings["init"], settings["runs"])
    if work.exists():
        shutil.rmtree(work)  # a half-finished earlier try: its logs must not mix into this curve
    work.mkdir(parents=True)
    started = time.time()
    data = dataset_paths(root)
    if spec.program == "reference":
        ref = write_reference_spec(data, work, args.epochs, seed, folder, args.threads, args.workers,
                                   settings["image_size"], weights, recipe=settings["recipe"])
        code = start_reference(ref, folder, args.threads).wait()
        curve, log = reference_curve(work), work / "train.log"
    else:
        overrides = list(settings["overrides"])
        if spec.init == "reference":
            ref = write_reference_spec(data, work / "reference_init", args.epochs, seed, folder, args.threads,
                                       args.workers, args.image_size, weights)
            overrides.append(f"model.weights={reference_initial_weights(ref, folder)}")
        code = start_ours(root, work, args.epochs, seed, str(Path(args.config).resolve()), overrides, args.threads,
                          args.workers).wait()
        curve, log = ours_curve(work), work / "train.log"
    if code != 0 or not curve or curve[-1]["epoch"] != args.epochs:
        print(f"error: {arm} seed {seed} on {root.name} failed (exit code {code}, {len(curve)} of {args.epochs} "
              f"epochs); see {log}", file=sys.stderr, flush=True)
        return None
    return {"kind": settings["data"]["name"], "arm": arm, "seed": seed, "epochs": args.epochs,
            "final_AP": curve[-1]["AP"], "final_AP50": curve[-1]["AP50"],
            "AP_epoch8": next((r["AP"] for r in curve if r["epoch"] == EPOCH_MARK), None),
            "curve": [{"epoch": r["epoch"], "AP": r["AP"], "AP50": r["AP50"]} for r in curve],
            "seconds": round(time.time() - started, 1), **git_commit(), "settings": settings}


def mismatch(stored: dict[str, Any], settings: dict[str, Any]) -> list[str]:
    """The :data:`COMPARED` settings a seed file recorded differently (none for a file without settings)."""
    old = stored.get("settings")
    if not isinstance(old, dict):
        return []
    return [k for k in COMPARED if old.get(k) != settings.get(k) and (k in old or k not in RECORDED_LATER)]


def write_summary(out: Path) -> str:
    summary = summarize_protocol(load_results(out))
    write_json_atomic(out / "summary.json", summary)
    table = format_summary(summary)
    (out / "summary.md").write_text(table + "\n")
    return table


def run(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    """``convergence --seeds N`` / ``--seed-list``: see the module docstring."""
    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    if args.seeds is not None and args.seed_list is not None:
        return fail("give either --seeds N or --seed-list K ..., not both")
    seeds = list(dict.fromkeys(args.seed_list)) if args.seed_list is not None else list(range(args.seeds))
    try:
        variants = variant_arms(getattr(args, "variant", None) or [])
        for name, extra in variants.items():  # a bad key fails here, before any dataset or training starts
            if not recipe_overrides(extra):
                config_digest(args.config, [*overrides, *extra])
    except ValueError as error:  # ConfigError too
        return fail(str(error))
    arms = list(dict.fromkeys(args.arms or [*ARMS, *variants]))
    if not seeds or min(seeds) < 0:
        return fail("--seeds N needs N >= 1 (--seed-list: seeds >= 0)")
    unknown = [a for a in arms if a not in ARMS and a not in variants]
    if unknown:
        return fail(f"unknown arm(s) {unknown}; arms: {', '.join([*ARMS, *variants])} (a variant is defined with "
                    "--variant NAME KEY=VALUE ...)")
    if args.same_init:
        return fail("--same-init is the arm ours_reference_init in the seed protocol (--arms ours_reference_init)")
    folder = reference_folder()
    if folder is None and any(arm_spec(a, variants).init == "reference" for a in arms):
        return fail("the reference effdet 0.4.1 was not found (needed by the arms "
                    f"{[a for a in arms if arm_spec(a, variants).init == 'reference']}): run `make parity-env` or set "
                    "EFFDET_PARITY_PATH")
    out = Path(args.out).resolve()
    try:
        if args.data:
            roots = [Path(d).resolve() for d in args.data]
            data = {r.name: dict(name=r.name, num_train=dataset_counts(r)[0], num_val=dataset_counts(r)[1],
                                 data_seed=None) for r in roots}
        else:
            roots = make_datasets(args.kinds, out, args.num_train, args.num_val, args.data_seed,
                                  parse_sizes(args.sizes), check_seed=True)
            data = {r.name: dict(name=r.name, num_train=dataset_counts(r)[0], num_val=dataset_counts(r)[1],
                                 data_seed=args.data_seed) for r in roots}
        for root in roots:
            dataset_paths(root)
    except (ValueError, FileNotFoundError) as error:
        return fail(str(error))
    if any(r.name in RESERVED for r in roots) or len({r.name for r in roots}) != len(roots):
        return fail(f"dataset folder names must be distinct and not {RESERVED}: {[r.name for r in roots]}")

    # the plan: seed by seed, every arm of a seed before the next seed, so that a partial protocol has paired seeds
    plan = [(root, seed, arm) for root in roots for seed in seeds for arm in arms]
    todo, conflicts = [], []
    for root, seed, arm in plan:
        settings = arm_settings(arm, seed, data[root.name], args, overrides, variants)
        target = result_path(out, root.name, arm, seed)
        if target.exists():
            bad = mismatch(json.loads(target.read_text()), settings)
            if bad:
                conflicts.append(f"{target} (recorded {bad} differently)")
        else:
            todo.append((root, seed, arm, settings))
    if conflicts:
        return fail("results of other settings are in the way; use another --out or remove them:\n  "
                    + "\n  ".join(conflicts))
    print(f"seed protocol: {len(plan)} trainings, {len(plan) - len(todo)} already done, {len(todo)} to run "
          f"(one at a time), results in {out}", flush=True)
    weights = (reference_backbone_weights(folder, out / "work" / "weights")
               if folder is not None and any(s["init"] == "reference" for _, _, _, s in todo) else None)
    failed = []
    for index, (root, seed, arm, settings) in enumerate(todo, 1):
        print(f"[{index}/{len(todo)}] {root.name} {arm} seed {seed} ...", flush=True)
        try:
            result = run_one(arm, seed, root, out / "work" / root.name / arm / f"seed{seed}", settings, args,
                             folder, weights)
        except subprocess.CalledProcessError as error:  # reference_train.py init (ours_reference_init)
            print(f"error: {arm} seed {seed} on {root.name}: {error}\n{(error.stderr or '')[-2000:]}",
                  file=sys.stderr, flush=True)
            result = None
        if result is None:
            failed.append(f"{root.name} {arm} seed {seed}")
            continue
        write_json_atomic(result_path(out, root.name, arm, seed), result)
        write_summary(out)
        e8 = result["AP_epoch8"]
        print(f"    final AP {result['final_AP']:.3f} (epoch {EPOCH_MARK}: {'—' if e8 is None else f'{e8:.3f}'}) "
              f"in {result['seconds']:.0f} s", flush=True)
    print("\n" + write_summary(out))
    print(f"\nwritten: {out / 'summary.json'}, {out / 'summary.md'}")
    if failed:
        print(f"error: {len(failed)} training(s) failed (rerun to retry them): {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0
