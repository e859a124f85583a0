"""End-to-end predict latency: ours (the library's ``predict``) against the reference DetBenchPredict; with
``--runtime`` or ``--compare-reference``, every deployment path of :mod:`effdet.benchmark.deploy` with the
reference's DetBenchPredict as the baseline timed in the same rounds.

    python tools/benchmark.py predict [--runs 20]
    python tools/benchmark.py predict --runtime all --compare-reference [--models efficientdet_d0 ...]
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from effdet.benchmark import deploy
from effdet.benchmark import predict as library
from effdet.benchmark.common import run_worker

from .common import NOT_FOUND, fmt_time, reference_path, run_reference

# The reference's deployment worker (see deploy.Baseline): DetBenchPredict on a ready tensor.
_REFERENCE = r"""
import json, sys
spec = json.loads(sys.argv[1])
import torch
torch.set_num_threads(spec["threads"])
from effdet import create_model
size = spec["size"]
bench = create_model(spec["model"], bench_task="predict", pretrained_backbone=False, num_classes=90,
                     image_size=(size, size)).eval()
inputs = {b: torch.randn(b, 3, size, size) for b in (1, spec["batch"])}
def call(batch):
    with torch.no_grad():
        bench(inputs[batch])
"""


def _reference_spec(model_name: str, size: list, threads: int, batch: int) -> dict:
    return {"model": "tf_" + model_name, "size": size[0], "threads": threads, "batch": batch}


def reference_baseline(folder: Path) -> deploy.Baseline:
    """The reference package in ``folder`` as the deployment benchmark's baseline."""
    return deploy.Baseline("reference", "reference DetBenchPredict (tensor in)", _REFERENCE, _reference_spec,
                           str(folder), tempfile.gettempdir())


def add_arguments(parser) -> None:
    library.add_arguments(parser)
    parser.add_argument("--compare-reference", action="store_true", help="predict: alternate with the reference")


def run(args) -> list[str]:
    reference = reference_path()
    paths = library.requested_paths(args)
    if paths or args.compare_reference:
        if args.compare_reference and reference is None:
            raise RuntimeError(NOT_FOUND)
        return deploy.run(args.models, library.runtime_paths(paths), threads=args.threads, rounds=args.runs,
                          calibration=args.calibration,
                          baseline=reference_baseline(reference) if args.compare_reference else None)
    row, ours = library.predictor_row(args)
    rows = library.HEADER + [row]
    if reference:
        ref = run_reference("reference_predict", args.runs, "tf_efficientdet_d0", threads=args.threads)
        rows.append(f"| reference DetBenchPredict (tensor in: no pre-processing) | {fmt_time(ref['predict_s'])} | "
                    f"{ref['peak_rss_mib']:.0f} |")
        rows.append(f"| ratio ours/reference | ×{ours['predict_s']['median'] / ref['predict_s']['median']:.2f} | |")
        ours_fwd = run_worker("forward", args.runs, "efficientdet_d0", 512, threads=args.threads)
        ref_fwd = run_reference("reference_forward", args.runs, "tf_efficientdet_d0", 512, threads=args.threads)
        rows.append(f"| raw forward only: ours {fmt_time(ours_fwd['forward_s'])}, reference "
                    f"{fmt_time(ref_fwd['forward_s'])} | "
                    f"×{ours_fwd['forward_s']['median'] / ref_fwd['forward_s']['median']:.2f} | |")
    for row in rows[2:]:
        print(row, flush=True)
    return rows
