#!/usr/bin/env python
"""Benchmarks: model size/FLOPs/latency, training step, predict, post-processing, data loader, COCO eval.

    python tools/benchmark.py model [--variants efficientdet_d0 ...] [--runs 10] [--threads 2]
    python tools/benchmark.py train  [--runs 10]     # ours vs the reference effdet, D0 @512 batch 2
    python tools/benchmark.py predict [--runs 20]    # end-to-end predict, ours vs DetBenchPredict
    python tools/benchmark.py postprocess | loader | cocoeval
    python tools/benchmark.py all [--markdown]
    python tools/benchmark.py convergence --compare-reference [--epochs 16] [--data DIR ...]   # val AP per epoch

Every figure is a median over --runs runs after warm-up, with the spread (min–max). Each measurement
runs in a fresh subprocess so its peak memory (max RSS) is its own. The reference package is imported
only in those subprocesses, from EFFDET_PARITY_PATH or .parity/ (`make parity-env`), never in ours.
FLOPs are counted by instrumenting the real forward (torch.utils.flop_counter) and reported as
multiply-adds (the counter's FLOPs / 2), as the paper counts them.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OFFICIAL = {  # params (M) and paper multiply-adds (B)
    "efficientdet_d0": (3.9, 2.54), "efficientdet_d1": (6.6, 6.10), "efficientdet_d2": (8.1, 11.0),
    "efficientdet_d3": (12.0, 24.9), "efficientdet_d4": (20.7, 55.2), "efficientdet_d5": (33.7, 130),
    "efficientdet_d6": (51.9, 226), "efficientdet_d7": (51.9, 325), "efficientdet_d7x": (77.0, 410),
    "efficientdet_lite0": (3.2, None), "efficientdet_lite1": (4.2, None), "efficientdet_lite2": (5.3, None),
    "efficientdet_lite3": (8.4, None), "efficientdet_lite3x": (9.3, None), "efficientdet_lite4": (15.1, None),
}


def reference_path() -> str | None:
    for candidate in (os.environ.get("EFFDET_PARITY_PATH"), str(ROOT / ".parity")):
        if candidate and (Path(candidate) / "effdet").is_dir():
            return candidate
    return None


def summarize(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": len(times)}


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --------------------------------------------------------------------------- workers (run in subprocesses)


def _timed(fn, runs: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return summarize(times)


def _random_targets(batch: int, size: int, num_boxes: int, generator):
    import torch

    xy = torch.rand(batch, num_boxes, 2, generator=generator) * size * 0.7
    wh = 16 + torch.rand(batch, num_boxes, 2, generator=generator) * size * 0.3
    boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=-1)
    labels = torch.randint(0, 90, (batch, num_boxes), generator=generator)
    return boxes, labels


def worker_model(name: str, runs: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import effdet

    model = effdet.create_model(name).eval()
    params = sum(p.numel() for p in model.parameters())
    images = torch.randn(1, 3, *model.config.image_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(images)
    model = model.to(memory_format=torch.channels_last)  # as the Predictor and training run it
    with torch.no_grad():
        latency = _timed(lambda: model(images), runs)
    return {"params": params, "macs": counter.get_total_flops() / 2, "latency_s": latency,
            "image_size": model.config.image_size}


def worker_train(impl: str, runs: int, name: str = "efficientdet_d0", batch: int = 2, size: int = 512) -> dict:
    import torch

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=generator)
    boxes, labels = _random_targets(batch, size, 8, generator)
    if impl == "ours":
        import effdet
        from effdet.assign import AnchorMatcher
        from effdet.inference import anchors_for
        from effdet.loss import DetectionLoss

        model = effdet.create_model(name, image_size=size).train().to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)  # as DetectionModule (channels_last: true)
        matcher, criterion = AnchorMatcher(0.5, 0.4), DetectionLoss(90)
        anchors = anchors_for(model.config, (size, size), images.device)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def step():
            class_out, box_out = model(images)
            cls_t, box_t, num_pos = matcher(anchors, boxes, labels)
            loss = criterion(class_out, box_out, cls_t, box_t, num_pos)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    else:
        from effdet import create_model  # the reference package (PYTHONPATH)

        bench = create_model(name, bench_task="train", bench_labeler=True, pretrained_backbone=False, num_classes=90,
                             image_size=(size, size)).train()
        optimizer = torch.optim.SGD(bench.parameters(), lr=1e-3, momentum=0.9)
        target = {"bbox": boxes[..., [1, 0, 3, 2]], "cls": labels.float() + 1}  # reference: yxyx, 1-based

        def step():
            loss = bench(images, target)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    timing = _timed(step, runs)
    return {"step_s": timing, "images_per_s": batch / timing["median"], "peak_rss_mib": peak_rss_mib()}


def worker_predict(impl: str, runs: int, name: str = "efficientdet_d0", size: int = 512) -> dict:
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    if impl == "ours":
        import effdet
        from effdet.inference import PostprocessSettings
        from effdet.predictor import Predictor

        model = effdet.create_model(name, image_size=size).eval()
        predictor = Predictor(model, [str(i) for i in range(90)], list(range(1, 91)),
                              PostprocessSettings(nms="hard"))
        image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)  # a 640x480 BGR photo-sized array
        fn = lambda: predictor.predict([image])  # noqa: E731  letterbox + normalise + model + decode + NMS
    else:
        from effdet import create_model

        bench = create_model(name, bench_task="predict", pretrained_backbone=False, num_classes=90,
                             image_size=(size, size)).eval()
        images = torch.randn(1, 3, size, size)

        def fn():
            with torch.no_grad():
                bench(images)
    timing = _timed(fn, runs)
    return {"predict_s": timing, "peak_rss_mib": peak_rss_mib()}


def worker_raw_forward(impl: str, runs: int, name: str, size: int) -> dict:
    import torch

    if impl == "ours":
        import effdet

        model = effdet.create_model(name, image_size=size).eval().to(memory_format=torch.channels_last)
    else:
        from effdet import create_model

        model = create_model(name, pretrained_backbone=False, image_size=(size, size)).eval()
    images = torch.randn(1, 3, size, size)
    with torch.no_grad():
        return {"forward_s": _timed(lambda: model(images), runs)}


def worker_postprocess(runs: int) -> dict:
    from effdet.postprocess import benchmark_postprocess

    return {"hard_ms": benchmark_postprocess(repeats=runs, nms_method="hard"),
            "soft_ms": benchmark_postprocess(repeats=max(3, runs // 4), nms_method="soft")}


def worker_loader(num_images: int) -> dict:
    import cv2
    import numpy as np

    from effdet.data import benchmark_loader
    from effdet.evaluation import write_json_atomic

    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        images, annotations = [], []
        os.makedirs(f"{tmp}/images")
        for i in range(32):
            # photo-like content (smooth gradients + noise) so JPEG sizes are realistic
            base = cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (640, 480))
            image = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(f"{tmp}/images/{i}.jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            images.append({"id": i, "file_name": f"{i}.jpg", "width": 640, "height": 480})
            for k in range(5):
                x, y = rng.uniform(0, 500), rng.uniform(0, 350)
                annotations.append({"id": i * 10 + k, "image_id": i, "category_id": 1, "iscrowd": 0,
                                    "bbox": [x, y, 100, 100], "area": 10000})
        write_json_atomic(f"{tmp}/ann.json", {"images": images, "annotations": annotations,
                                              "categories": [{"id": 1, "name": "thing"}]})
        return benchmark_loader(f"{tmp}/images", f"{tmp}/ann.json", 512, num_images=num_images)


def worker_cocoeval(runs: int) -> dict:
    from effdet.evaluation import benchmark_coco_eval

    result = {"pycocotools_s": benchmark_coco_eval(backend="pycocotools", repeats=runs)}
    try:
        result["faster_coco_eval_s"] = benchmark_coco_eval(backend="faster_coco_eval", repeats=runs)
    except ImportError:
        result["faster_coco_eval_s"] = None
    return result


WORKERS = {"model": worker_model, "train": worker_train, "predict": worker_predict, "forward": worker_raw_forward,
           "postprocess": worker_postprocess, "loader": worker_loader, "cocoeval": worker_cocoeval}


def run_worker(kind: str, *args, reference: bool = False, threads: int = 2, timeout: int = 1800) -> dict:
    """Run one measurement in a fresh interpreter; the reference gets its own import path."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    if reference:
        path = reference_path()
        if path is None:
            raise RuntimeError("reference package not found: run `make parity-env` or set EFFDET_PARITY_PATH")
        env["PYTHONPATH"] = path  # the reference `effdet` shadows nothing of ours: ours is not on this path
        cwd = tempfile.gettempdir()
    else:
        env["PYTHONPATH"] = str(ROOT)
        cwd = str(ROOT)
    code = ("import json, sys, torch; torch.set_num_threads(%d); sys.path.insert(0, %r); "
            "import benchmark as b; print('@@' + json.dumps(b.WORKERS[%r](*%r)))"
            % (threads, str(ROOT / "tools"), kind, list(args)))
    if reference:  # do not let tools/ (which is ours) resolve `effdet` first: import benchmark by file
        code = ("import json, sys, torch, importlib.util; torch.set_num_threads(%d); "
                "spec = importlib.util.spec_from_file_location('bench_tool', %r); b = importlib.util.module_from_spec(spec); "
                "spec.loader.exec_module(b); sys.path.remove(%r) if %r in sys.path else None; "
                "print('@@' + json.dumps(b.WORKERS[%r](*%r)))"
                % (threads, str(ROOT / "tools" / "benchmark.py"), str(ROOT), str(ROOT), kind, list(args)))
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker {kind} {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][2:])


# ------------------------------------------------------------------------------------------- reports


def fmt_time(t: dict, unit: float = 1000.0, suffix: str = "ms") -> str:
    return f"{t['median'] * unit:.1f} {suffix} ({t['min'] * unit:.1f}–{t['max'] * unit:.1f}, n={t['runs']})"


def bench_model(args) -> list[str]:
    rows = ["| variant | input | params (M) | official | multiply-adds (G) | paper | CPU latency, batch 1 |",
            "|---|---|---|---|---|---|---|"]
    for name in args.variants:
        r = run_worker("model", name, args.runs, threads=args.threads)
        params, paper = OFFICIAL.get(name, (None, None))
        size = "×".join(str(s) for s in r["image_size"])
        rows.append(f"| {name} | {size} | {r['params'] / 1e6:.2f} | {params or '-'} | {r['macs'] / 1e9:.2f} | "
                    f"{paper or '-'} | {fmt_time(r['latency_s'])} |")
        print(rows[-1], flush=True)
    return rows


def bench_train(args) -> list[str]:
    ours = run_worker("train", "ours", args.runs, threads=args.threads)
    rows = ["| training step, D0 @512, batch 2 | step time | images/s | peak RSS (MiB) |", "|---|---|---|---|",
            f"| ours (efficientdet_d0) | {fmt_time(ours['step_s'])} | {ours['images_per_s']:.2f} | "
            f"{ours['peak_rss_mib']:.0f} |"]
    if reference_path():
        ref = run_worker("train", "ref", args.runs, "tf_efficientdet_d0", reference=True, threads=args.threads)
        rows.append(f"| reference effdet (tf_efficientdet_d0, DetBenchTrain) | {fmt_time(ref['step_s'])} | "
                    f"{ref['images_per_s']:.2f} | {ref['peak_rss_mib']:.0f} |")
        rows.append(f"| ratio ours/reference | | throughput ×{ours['images_per_s'] / ref['images_per_s']:.2f} | "
                    f"memory ×{ours['peak_rss_mib'] / ref['peak_rss_mib']:.2f} |")
    for row in rows[2:]:
        print(row, flush=True)
    return rows


def bench_predict(args) -> list[str]:
    ours = run_worker("predict", "ours", args.runs, threads=args.threads)
    rows = ["| predict, D0 @512, batch 1 | latency | peak RSS (MiB) |", "|---|---|---|",
            f"| ours: Predictor.predict(640×480 image): letterbox, normalise, model, decode, NMS | "
            f"{fmt_time(ours['predict_s'])} | {ours['peak_rss_mib']:.0f} |"]
    if reference_path():
        ref = run_worker("predict", "ref", args.runs, "tf_efficientdet_d0", reference=True, threads=args.threads)
        rows.append(f"| reference DetBenchPredict (tensor in: no pre-processing) | {fmt_time(ref['predict_s'])} | "
                    f"{ref['peak_rss_mib']:.0f} |")
        rows.append(f"| ratio ours/reference | ×{ours['predict_s']['median'] / ref['predict_s']['median']:.2f} | |")
        ours_fwd = run_worker("forward", "ours", args.runs, "efficientdet_d0", 512, threads=args.threads)
        ref_fwd = run_worker("forward", "ref", args.runs, "tf_efficientdet_d0", 512, reference=True,
                             threads=args.threads)
        rows.append(f"| raw forward only: ours {fmt_time(ours_fwd['forward_s'])}, reference "
                    f"{fmt_time(ref_fwd['forward_s'])} | ×{ours_fwd['forward_s']['median'] / ref_fwd['forward_s']['median']:.2f} | |")
    for row in rows[2:]:
        print(row, flush=True)
    return rows


def bench_postprocess(args) -> list[str]:
    r = run_worker("postprocess", args.runs, threads=args.threads)
    rows = [f"| post-processing alone, 49,104 anchors × 90 classes | hard NMS {r['hard_ms']:.1f} ms | "
            f"soft-NMS {r['soft_ms']:.1f} ms |", "|---|---|---|"]
    print(rows[0], flush=True)
    return rows


def bench_loader(args) -> list[str]:
    r = run_worker("loader", 200, threads=1)
    rows = [f"| data loader, one worker process: decode + augment + collate, 640×480 JPEG → 512 | "
            f"{r['images_per_s']:.0f} images/s | decode {r['decode_ms']:.1f} ms, augment {r['augment_ms']:.1f} ms, "
            f"collate {r['collate_ms']:.2f} ms per image |", "|---|---|---|"]
    print(rows[0], flush=True)
    return rows


def bench_cocoeval(args) -> list[str]:
    r = run_worker("cocoeval", 3, threads=args.threads)
    fast = r["faster_coco_eval_s"]
    rows = [f"| COCO eval, 500 images × 100 detections | pycocotools {r['pycocotools_s']:.2f} s | "
            f"faster-coco-eval {fast:.2f} s (×{r['pycocotools_s'] / fast:.1f}) |" if fast else
            f"| COCO eval, 500 images × 100 detections | pycocotools {r['pycocotools_s']:.2f} s | n/a |",
            "|---|---|---|"]
    print(rows[0], flush=True)
    return rows


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["convergence"]:  # training quality, ours vs the reference: effdet/benchmarks/convergence.py
        from effdet.benchmarks.convergence import main as convergence_main

        return convergence_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["model", "train", "predict", "postprocess", "loader", "cocoeval", "all"])
    parser.add_argument("--variants", nargs="+", default=["efficientdet_d0", "efficientdet_d1", "efficientdet_d2",
                                                          "efficientdet_d3", "efficientdet_lite0"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="also write the tables (markdown) to this file")
    args = parser.parse_args(argv)
    jobs = {"model": bench_model, "train": bench_train, "predict": bench_predict, "postprocess": bench_postprocess,
            "loader": bench_loader, "cocoeval": bench_cocoeval}
    selected = list(jobs) if args.what == "all" else [args.what]
    print(f"# torch threads {args.threads}; medians of {args.runs} runs after warm-up; (min–max)")
    tables = []
    for what in selected:
        print(f"\n## {what}")
        tables.append("\n".join(jobs[what](args)))
    if args.out:
        Path(args.out).write_text("\n\n".join(tables) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
