"""Measurements of the comparisons, each in a fresh interpreter (:func:`benchmarks.common.run_ours` and
:func:`~benchmarks.common.run_reference`, the latter with only the reference package on its path).

Self-contained like ``effdet/benchmark/workers.py``: only the standard library at module level, ``effdet``
imported inside the functions (ours or the reference, whichever the path holds). The timing helpers are the
library's, loaded from that file by path: in the reference's process ``effdet`` is the reference package.
"""
from __future__ import annotations

import importlib.util
import time
from pathlib import Path

_LIBRARY_WORKERS = Path(__file__).resolve().parents[1] / "effdet" / "benchmark" / "workers.py"
_spec = importlib.util.spec_from_file_location("effdet_benchmark_workers", _LIBRARY_WORKERS)
library = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(library)
timed, peak_rss_mib = library.timed, library.peak_rss_mib


def _random_targets(batch: int, size: int, num_boxes: int, generator):
    import torch

    xy = torch.rand(batch, num_boxes, 2, generator=generator) * size * 0.7
    wh = 16 + torch.rand(batch, num_boxes, 2, generator=generator) * size * 0.3
    boxes = torch.cat([xy, (xy + wh).clamp(max=size - 1)], dim=-1)
    labels = torch.randint(0, 90, (batch, num_boxes), generator=generator)
    return boxes, labels


def worker_train(impl: str, runs: int, name: str = "efficientdet_d0", batch: int = 2, size: int = 512,
                 precision: str = "32-true", device: str = "cpu", compiled: bool = False) -> dict:
    """Median step time of one training step (forward, matcher / labeler, loss, backward, SGD step) on random
    images and boxes. ``precision``: 32-true, bf16-mixed (autocast to bfloat16) or 16-mixed (autocast to float16
    with a GradScaler), weights in float32. ``compiled`` (ours): the network compiled as ``compile: true`` compiles it
    (``effdet.engine.module.compile_network``); the first step, which compiles, is timed apart (``compile_s``). On
    CUDA also the peak allocated memory and (ours) the host synchronisations of one step."""
    import contextlib

    import torch

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, size, size, generator=generator).to(device)
    boxes, labels = _random_targets(batch, size, 8, generator)
    boxes, labels = boxes.to(device), labels.to(device)
    autocast_dtype = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}[precision]
    device_type = torch.device(device).type

    def autocast():
        if autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type, dtype=autocast_dtype)

    scaler = torch.amp.GradScaler(device_type) if precision == "16-mixed" else None
    if impl == "ours":
        import effdet
        from effdet.modeling.assign import AnchorMatcher
        from effdet.modeling.anchors import anchors_for
        from effdet.modeling.loss import DetectionLoss

        model = effdet.create_model(name, image_size=size).train().to(device, memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)  # as DetectionModule (channels_last: true)
        if compiled:
            from effdet.engine.module import compile_network

            compile_network(model)
        matcher, criterion = AnchorMatcher(0.5, 0.4), DetectionLoss(90)
        anchors = anchors_for(model.config, (size, size), images.device)

        def loss_of_step():
            cls_t, box_t, num_pos = matcher(anchors, boxes, labels)  # before the forward, as DetectionModule does
            with autocast():
                class_out, box_out = model(images)
                return criterion(class_out, box_out, cls_t, box_t, num_pos)["loss"]
    else:
        from effdet import create_model  # the reference package (PYTHONPATH)

        model = create_model(name, bench_task="train", bench_labeler=True, pretrained_backbone=False, num_classes=90,
                             image_size=(size, size)).train().to(device)
        target = {"bbox": boxes[..., [1, 0, 3, 2]], "cls": labels.float() + 1}  # reference: yxyx, 1-based

        def loss_of_step():
            with autocast():
                return model(images, target)["loss"]
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step():
        loss = loss_of_step()
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
            optimizer.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        if device_type == "cuda":
            torch.cuda.synchronize()
    compile_s = None
    if compiled:
        start = time.perf_counter()
        step()
        compile_s = time.perf_counter() - start
    timing = timed(step, runs)
    result = {"step_s": timing, "images_per_s": batch / timing["median"], "peak_rss_mib": peak_rss_mib()}
    if compile_s is not None:
        result["compile_s"] = compile_s
    if device_type == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
        if impl == "ours":
            from effdet.engine.host_syncs import HostSyncCounter

            with HostSyncCounter() as syncs:
                step()
            result["syncs_per_step"] = syncs.total
    return result


def worker_reference_predict(runs: int, name: str = "tf_efficientdet_d0", size: int = 512) -> dict:
    """The reference's DetBenchPredict on a ready tensor (no pre-processing)."""
    import torch
    from effdet import create_model  # the reference package (PYTHONPATH)

    bench = create_model(name, bench_task="predict", pretrained_backbone=False, num_classes=90,
                         image_size=(size, size)).eval()
    images = torch.randn(1, 3, size, size)

    def fn():
        with torch.no_grad():
            bench(images)
    return {"predict_s": timed(fn, runs), "peak_rss_mib": peak_rss_mib()}


def worker_reference_forward(runs: int, name: str, size: int) -> dict:
    """The reference's raw network alone (ours: ``forward`` of effdet/benchmark/workers.py)."""
    import torch
    from effdet import create_model  # the reference package (PYTHONPATH)

    model = create_model(name, pretrained_backbone=False, image_size=(size, size)).eval()
    images = torch.randn(1, 3, size, size)
    with torch.no_grad():
        return {"forward_s": timed(lambda: model(images), runs)}


def worker_cocoeval(runs: int) -> dict:
    from benchmarks.cocoeval import benchmark_coco_eval

    result = {"pycocotools_s": benchmark_coco_eval(backend="pycocotools", repeats=runs)}
    try:
        result["faster_coco_eval_s"] = benchmark_coco_eval(backend="faster_coco_eval", repeats=runs)
    except ImportError:
        result["faster_coco_eval_s"] = None
    return result


WORKERS = {"train": worker_train, "reference_predict": worker_reference_predict,
           "reference_forward": worker_reference_forward, "cocoeval": worker_cocoeval}
