"""Diagnostic: the final val AP of several EMA warm-ups (and of the raw weights) from ONE training trajectory.

    python -m benchmarks.ema_windows --warmups 10 20 50 200 --out OUT.json -- CONFIG [section.key=value ...]
    python -m benchmarks.ema_windows --warmups 50 --out OUT.json --reference-spec SPEC.json   # the reference's run

The EMA never feeds back into training, so one run can carry several averages of the same weights: besides the
run's own EMA (``optim.ema_decay`` with the warm-up ``d_t = min(decay, (1+t)/(optim.ema_warmup+t))``) it keeps one
per warm-up constant ``k`` with ``d_t = min(decay, (1+t)/(k+t))``: after ``t`` steps such an average spans about
``(k+t)/(k-1)`` steps (``t/9`` for TF's ``k = 10``; a larger ``k`` follows the weights more closely; no EMA is the
limit). Each average is updated on exactly the steps the run's own EMA is (skipped steps included), so
``k = optim.ema_warmup`` reproduces the run's own EMA exactly: a check that the extra averages do not change the run
(the training itself is the one ``tools/train.py`` runs with the same arguments). At the end, each average, and the
raw weights, replaces the EMA in a copy of ``last.ckpt`` and is scored by ``tools/eval.py`` on the run's validation
set (the same letterbox, decoding and COCO evaluation as training's validation). OUT.json:
``{"own_ema": {"AP", "AP50"}, "raw": {...}, "k10": {...}, ...}``.

``--reference-spec SPEC.json`` does the same for the reference's run of that spec (a protocol ``reference`` seed's
``RESULTS/work/<kind>/reference/seed<k>/spec.json``; needs the reference package, ``make parity-env``): it trains
with ``benchmarks/reference_train.py`` and the spec plus ``extra_ema_warmups``, in OUT.json's folder, and reads back
its final evaluations (the reference's own, see that script); ``own_ema`` is its last epoch's AP.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from lightning.pytorch.callbacks import Callback

from effdet.engine import runner
from effdet.engine.ema import ExponentialMovingAverage
from effdet.engine.schema import load_train_config


class ExtraAverages(Callback):
    """Carries one EMA per warm-up constant ``k``, updated whenever the run's own EMA is."""

    def __init__(self, warmups: Sequence[float]) -> None:
        self.warmups = list(warmups)
        self.averages: dict[str, ExponentialMovingAverage] = {}

    def on_fit_start(self, trainer, pl_module) -> None:
        if pl_module.ema is None:
            raise SystemExit("error: the run has no EMA (optim.ema_decay is null): nothing to compare with")
        own = pl_module.ema
        self.averages = {f"k{k:g}": ExponentialMovingAverage(pl_module.model, own.decay, k) for k in self.warmups}
        update = own.update

        def update_all(model: torch.nn.Module) -> None:
            update(model)
            for average in self.averages.values():
                average.update(model)

        own.update = update_all


def score(checkpoint: Path, cfg: Any, out: Path) -> dict[str, float]:
    from effdet.cli.eval import main as evaluate

    root = Path(cfg.data.root)
    code = evaluate(["--weights", str(checkpoint), "--images", str(root / cfg.data.val.images),
                     "--annotations", str(root / cfg.data.val.annotations), "--out", str(out)])
    if code:
        raise SystemExit(f"error: tools/eval.py failed on {checkpoint} (exit code {code})")
    metrics = json.loads((out / "metrics.json").read_text())
    return {"AP": metrics["AP"], "AP50": metrics["AP50"], "AR100": metrics["AR100"]}


def reference_windows(spec_path: Path, warmups: Sequence[float], out: Path) -> dict[str, Any]:
    from benchmarks.convergence import reference_curve, reference_folder, start_reference

    folder = reference_folder()
    if folder is None:
        raise SystemExit("error: the reference package is not installed (make parity-env, or EFFDET_PARITY_PATH)")
    spec = json.loads(spec_path.read_text())
    work = out.parent / "reference"
    work.mkdir(parents=True, exist_ok=True)
    spec.update(out=str(work), extra_ema_warmups=list(warmups))
    (work / "spec.json").write_text(json.dumps(spec, indent=1))
    code = start_reference(work / "spec.json", folder, int(spec.get("threads", 1))).wait()
    extra = [line for line in (work / "train.log").read_text().splitlines() if line.startswith("REFERENCE_EXTRA ")]
    if code or not extra:
        raise SystemExit(f"error: the reference's run failed (exit code {code}); see {work / 'train.log'}")
    last = reference_curve(work)[-1]
    return {"own_ema": {"AP": last["AP"], "AP50": last["AP50"]}, **json.loads(extra[-1][len("REFERENCE_EXTRA "):])}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="ema_windows")
    parser.add_argument("--warmups", type=float, nargs="+", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reference-spec", type=Path, help="run the reference with this spec instead of ours")
    args = parser.parse_args(argv[:split])
    train_args = argv[split + 1:]
    if args.reference_spec is not None:
        results = reference_windows(args.reference_spec, args.warmups, args.out)
        args.out.write_text(json.dumps(results, indent=1))
        print(json.dumps(results))
        return 0
    if not train_args:
        parser.error("give the training's arguments after --: CONFIG [section.key=value ...] (or --reference-spec)")
    cfg = load_train_config(train_args[0], train_args[1:])
    extra = ExtraAverages(args.warmups)
    runner.train(cfg, callbacks=[extra])
    run = Path(cfg.output_dir)
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    weights = {"raw": {k[len("model."):]: v for k, v in last["state_dict"].items() if k.startswith("model.")}}
    weights.update({name: {k[len("module."):]: v for k, v in average.state_dict().items() if k.startswith("module.")}
                    for name, average in extra.averages.items()})
    results: dict[str, Any] = {"own_ema": score(run / "checkpoints" / "last.ckpt", cfg, run / "ema_windows" / "own")}
    for name, state in weights.items():
        ckpt = dict(last, state_dict={**last["state_dict"], **{"ema.module." + k: v.cpu() for k, v in state.items()}})
        path = run / "ema_windows" / f"{name}.ckpt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ckpt, path)
        results[name] = score(path, cfg, run / "ema_windows" / name)
        path.unlink()
    args.out.write_text(json.dumps(results, indent=1))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
