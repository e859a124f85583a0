"""One training step (forward, matcher, loss, backward, SGD step), D0 @512: ours against the reference effdet's
``DetBenchTrain``, at each batch size of ``--train-batches`` (default 2 and 8), in float32; then ours in each other
precision of ``--train-precisions`` (default bf16-mixed: autocast to bfloat16 with float32 weights, as
``trainer.precision=bf16-mixed`` trains; the reference has no bf16 path). Rows give the median step time, images/s,
peak memory (max RSS of the measuring process; on CUDA also the peak allocated GPU memory) and, on CUDA, the host
synchronisations per step of our step. The CPU's model and bf16/int8 instruction sets are printed above the table.

    python tools/benchmark.py train [--runs 5] [--train-batches 2 8] [--train-precisions bf16-mixed]
    python tools/benchmark.py train --device cuda --train-batches 16 --train-precisions bf16-mixed 16-mixed
    python tools/benchmark.py train --train-compile     # + ours compiled (compile: true), float32

With ``--train-compile``, ours also runs with the network compiled by ``torch.compile`` (as ``compile: true`` trains);
its first step, which compiles, is reported apart.
"""
from __future__ import annotations

from .common import fmt_time, reference_path, run_ours, run_reference


def add_arguments(parser) -> None:
    parser.add_argument("--train-batches", type=int, nargs="+", default=[2, 8], help="train: batch sizes")
    parser.add_argument("--train-precisions", nargs="+", default=["bf16-mixed"],
                        help="train: precisions of ours besides 32-true (bf16-mixed, 16-mixed)")
    parser.add_argument("--device", default="cpu", help="train: cpu or cuda (the reference rows run on it too)")
    parser.add_argument("--train-compile", action="store_true",
                        help="train: also ours with the network compiled (compile: true), float32")


def _memory(result: dict) -> str:
    gpu = result.get("peak_gpu_mib")
    return f"{result['peak_rss_mib']:.0f}" + (f" (GPU {gpu:.0f})" if gpu is not None else "")


def _row(label: str, result: dict) -> str:
    syncs = result.get("syncs_per_step")
    return (f"| {label} | {fmt_time(result['step_s'])} | {result['images_per_s']:.2f} | {_memory(result)} | "
            f"{'' if syncs is None else syncs} |")


def run(args) -> list[str]:
    from effdet.benchmark.deploy import cpu_features

    device = getattr(args, "device", "cpu")
    batches = getattr(args, "train_batches", [2, 8])
    precisions = [p for p in getattr(args, "train_precisions", ["bf16-mixed"]) if p != "32-true"]
    print(f"CPU: {cpu_features()}; {args.threads} threads; device {device}", flush=True)
    rows = ["| training step, D0 @512 | step time | images/s | peak RSS (MiB) | host syncs per step |",
            "|---|---|---|---|---|"]

    def add(row: str) -> None:
        rows.append(row)
        print(row, flush=True)

    for batch in batches:
        ours = run_ours("train", "ours", args.runs, "efficientdet_d0", batch, 512, "32-true", device,
                        threads=args.threads)
        add(_row(f"ours (efficientdet_d0), batch {batch}, float32", ours))
        if reference_path():
            ref = run_reference("train", "ref", args.runs, "tf_efficientdet_d0", batch, 512, "32-true", device,
                                threads=args.threads)
            add(_row(f"reference effdet (tf_efficientdet_d0, DetBenchTrain), batch {batch}, float32", ref))
            add(f"| ratio ours/reference, batch {batch}, float32 | | throughput "
                f"×{ours['images_per_s'] / ref['images_per_s']:.2f} | memory "
                f"×{ours['peak_rss_mib'] / ref['peak_rss_mib']:.2f} | |")
        for precision in precisions:
            mixed = run_ours("train", "ours", args.runs, "efficientdet_d0", batch, 512, precision, device,
                             threads=args.threads)
            add(_row(f"ours (efficientdet_d0), batch {batch}, {precision}", mixed))
            add(f"| ratio {precision}/float32 (ours), batch {batch} | | throughput "
                f"×{mixed['images_per_s'] / ours['images_per_s']:.2f} | | |")
        if getattr(args, "train_compile", False):
            compiled = run_ours("train", "ours", args.runs, "efficientdet_d0", batch, 512, "32-true", device, True,
                                threads=args.threads)
            add(_row(f"ours (efficientdet_d0), batch {batch}, float32, compile: true (first step "
                     f"{compiled['compile_s']:.0f} s)", compiled))
            add(f"| ratio compiled/eager (ours), batch {batch}, float32 | | throughput "
                f"×{compiled['images_per_s'] / ours['images_per_s']:.2f} | memory "
                f"×{compiled['peak_rss_mib'] / ours['peak_rss_mib']:.2f} | |")
    return rows
