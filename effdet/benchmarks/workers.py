"""Measurements run in a fresh interpreter each (see :func:`effdet.benchmarks.common.run_worker`).

Self-contained on purpose: only the standard library at module level, ``effdet`` imported inside the
functions, so the reference package (also called ``effdet``) can run the same code from its own path.
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
    imported inside): ``effdet.benchmarks.deploy`` copies this function's source into its worker processes.
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
    from effdet.benchmarks.postprocess import benchmark_postprocess

    return {"hard_ms": benchmark_postprocess(repeats=runs, nms_method="hard"),
            "soft_ms": benchmark_postprocess(repeats=max(3, runs // 4), nms_method="soft")}


def worker_loader(num_images: int) -> dict:
    import cv2
    import numpy as np

    from effdet.benchmarks.loader import benchmark_loader
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


def worker_cocoeval(runs: int) -> dict:
    from effdet.benchmarks.cocoeval import benchmark_coco_eval

    result = {"pycocotools_s": benchmark_coco_eval(backend="pycocotools", repeats=runs)}
    try:
        result["faster_coco_eval_s"] = benchmark_coco_eval(backend="faster_coco_eval", repeats=runs)
    except ImportError:
        result["faster_coco_eval_s"] = None
    return result


WORKERS = {"model": worker_model, "train": worker_train, "predict": worker_predict, "forward": worker_raw_forward,
           "postprocess": worker_postprocess, "loader": worker_loader, "cocoeval": worker_cocoeval}
