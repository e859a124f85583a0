"""Post-processing alone: decode, top-k and NMS over D0-like outputs (49,104 anchors x 90 classes)."""
from __future__ import annotations

import statistics
import time

import torch

from ..modeling.anchors import feature_sizes, generate_anchors
from ..ops.nms import postprocess

from .common import run_worker


def benchmark_postprocess(
    num_classes: int = 90, image_size: int = 512, repeats: int = 20, nms_method: str = "hard", batch_size: int = 1
) -> float:
    """Median milliseconds of ``postprocess`` for D0-like outputs at ``image_size`` (P3-P7, 9 anchors).

    Logits ~ N(-4.6, 1) (a freshly initialised head, class bias -log(99)), box codes ~ N(0, 0.5).
    """
    generator = torch.Generator().manual_seed(0)
    sizes = feature_sizes((image_size, image_size), 3, 7)
    class_outputs = [torch.randn(batch_size, 9 * num_classes, h, w, generator=generator) - 4.6 for h, w in sizes]
    box_outputs = [torch.randn(batch_size, 36, h, w, generator=generator) * 0.5 for h, w in sizes]
    anchors = generate_anchors(image_size)
    postprocess(class_outputs, box_outputs, anchors, nms_method=nms_method)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        postprocess(class_outputs, box_outputs, anchors, nms_method=nms_method)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def run(args) -> list[str]:
    r = run_worker("postprocess", args.runs, threads=args.threads)
    rows = [f"| post-processing alone, 49,104 anchors × 90 classes | hard NMS {r['hard_ms']:.1f} ms | "
            f"soft-NMS {r['soft_ms']:.1f} ms |", "|---|---|---|"]
    print(rows[0], flush=True)
    return rows
