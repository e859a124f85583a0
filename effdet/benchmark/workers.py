"""Measurements run in a fresh interpreter each (see :func:`effdet.benchmark.common.run_worker`).

Self-contained on purpose: only the standard library at module level, ``effdet`` imported inside the
functions. ``tools/benchmark.py`` (the repository's ``benchmarks/workers.py``) loads this file by path in the
reference package's process (also called ``effdet``) for :func:`timed`, :func:`summarize` and :func:`peak_rss_mib`.
"""
from __future__ import annotations

import os
import tempfile
import statistics
import time


def summarize(times: list[float]) -> dict:
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "runs": len(times)}


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB: VmHWM, the high-water mark of its own address space.

    ``ru_maxrss`` is kept across ``execve`` on Linux, so a fresh interpreter would report its parent's peak when
    that was larger; it is only the fallback where ``/proc`` is missing. Self-contained (standard library,
    imported inside): ``effdet.benchmark.deploy`` copies this function's source into its worker processes.
    """
    import resource

    try:
        with open("/proc/self/status") as status:
            for row in status:
                if row.startswith("VmHWM:"):
                    return int(row.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn, runs: int, warmup: int = 2) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return summarize(times)


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
        latency = timed(lambda: model(images), runs)
    return {"params": params, "macs": counter.get_total_flops() / 2, "latency_s": latency,
            "image_size": model.config.image_size}


def worker_predict(runs: int, name: str = "efficientdet_d0", size: int = 512) -> dict:
    """End to end: ``Predictor.predict`` of a 640x480 image (letterbox, normalise, model, decode, NMS)."""
    import numpy as np

    import effdet
    from effdet.modeling.postprocess_settings import PostprocessSettings
    from effdet.inference.predictor import Predictor

    model = effdet.create_model(name, image_size=size).eval()
    predictor = Predictor(model, [str(i) for i in range(90)], list(range(1, 91)), PostprocessSettings(nms="hard"))
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)  # a photo-sized BGR array
    timing = timed(lambda: predictor.predict([image]), runs)
    return {"predict_s": timing, "peak_rss_mib": peak_rss_mib()}


def worker_forward(runs: int, name: str, size: int) -> dict:
    """The raw network alone (no pre- or post-processing), channels-last as the Predictor runs it."""
    import torch

    import effdet

    model = effdet.create_model(name, image_size=size).eval().to(memory_format=torch.channels_last)
    images = torch.randn(1, 3, size, size)
    with torch.no_grad():
        return {"forward_s": timed(lambda: model(images), runs)}


def worker_postprocess(runs: int) -> dict:
    from effdet.benchmark.postprocess import benchmark_postprocess

    return {"hard_ms": benchmark_postprocess(repeats=runs, nms_method="hard"),
            "soft_ms": benchmark_postprocess(repeats=max(3, runs // 4), nms_method="soft")}


def worker_loader(num_images: int) -> dict:
    import cv2
    import numpy as np

    from effdet.benchmark.loader import benchmark_loader
    from effdet.fileio import write_json_atomic

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


WORKERS = {"model": worker_model, "predict": worker_predict, "forward": worker_forward,
           "postprocess": worker_postprocess, "loader": worker_loader}
