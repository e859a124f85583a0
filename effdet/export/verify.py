"""Checking an exported file: deterministic check images, the file run in onnxruntime against the PyTorch graph
(raw outputs within a tolerance; detections matched one by one, :func:`compare_detections`)."""
from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..modeling.variants import ModelConfig
from ..types import PathLike

__all__ = ["ExportMismatchError", "TOO_FEW_DECISIVE", "check_inputs", "compare_detections", "compare_with_onnxruntime",
           "have_onnxruntime"]


class ExportMismatchError(RuntimeError):
    """The exported file does not reproduce the PyTorch model's outputs on the check image."""


def _check_image(image_size: Sequence[int], seed: int = 0) -> np.ndarray:
    """A deterministic RGB test image with structure (gradients + shapes), ``image_size`` (h, w)."""
    height, width = image_size
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([(xx * 255 // max(width - 1, 1)), (yy * 255 // max(height - 1, 1)),
                      ((xx + yy) * 127 // max(height + width, 1))], axis=-1).astype(np.uint8)
    for _ in range(6):
        y0, x0 = rng.integers(0, height - 8), rng.integers(0, width - 8)
        h, w = rng.integers(8, max(9, height // 3)), rng.integers(8, max(9, width // 3))
        image[y0:y0 + h, x0:x0 + w] = rng.integers(0, 256, 3)
    return image


def check_inputs(config: ModelConfig, image_size: Sequence[int], batch: int = 1) -> dict[str, np.ndarray]:
    """Normalised check images ``[batch, 3, H, W]`` and their ``image_sizes`` (the full canvas)."""
    images = np.stack([_check_image(image_size, seed) for seed in range(batch)]).astype(np.float32)
    mean = np.asarray(config.mean, np.float32)
    std = np.asarray(config.std, np.float32)
    normalised = ((images - mean) / std).transpose(0, 3, 1, 2)
    sizes = np.tile(np.asarray(image_size, np.float32), (batch, 1))
    return {"images": np.ascontiguousarray(normalised), "image_sizes": sizes}


def _torch_reference(graph: nn.Module, inputs: dict[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
    parameter = next(graph.parameters())
    args = [torch.from_numpy(inputs[n]).to(parameter.device) for n in names]
    args[0] = args[0].to(parameter.dtype)
    with torch.no_grad():
        return [o.float().cpu().numpy() if o.is_floating_point() else o.cpu().numpy() for o in graph(*args)]


def compare_with_onnxruntime(path: PathLike, graph: nn.Module, input_names: Sequence[str],
                             output_names: Sequence[str], inputs: dict[str, np.ndarray], atol: float,
                             rtol: float) -> float:
    """Run ``path`` in onnxruntime and ``graph`` in PyTorch on ``inputs``; raise :class:`ExportMismatchError` if
    they differ (raw outputs: by more than ``atol + rtol·|torch|``; detections: see :func:`compare_detections`).
    Returns the largest absolute difference."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {n: inputs[n].astype(np.float16) if n == "images" and _input_is_half(session) else inputs[n]
            for n in input_names}
    got = session.run(list(output_names), feed)
    expected = _torch_reference(graph, inputs, input_names)
    if list(output_names) == ["batch_index", "boxes", "scores", "classes"]:
        problem, worst = compare_detections(dict(zip(output_names, got)), dict(zip(output_names, expected)),
                                            atol + rtol * float(np.abs(expected[1]).max(initial=1.0)))
        if problem and TOO_FEW_DECISIVE in problem:
            warnings.warn(f"'{path}': the detections on the check image could not be compared with PyTorch "
                          f"({problem}); the file is not verified. Export the raw outputs to check the network",
                          stacklevel=3)
            return None
        if problem:
            raise ExportMismatchError(f"'{path}': detections differ from PyTorch: {problem}")
        return worst
    worst = 0.0
    for name, ours, theirs in zip(output_names, got, expected):
        if ours.shape != theirs.shape:
            raise ExportMismatchError(f"'{path}': output '{name}' has shape {list(ours.shape)} in onnxruntime but "
                                      f"{list(theirs.shape)} in PyTorch")
        diff = np.abs(ours.astype(np.float64) - theirs)
        worst = max(worst, float(diff.max(initial=0.0)))
        if not np.all(diff <= atol + rtol * np.abs(theirs)):
            raise ExportMismatchError(
                f"'{path}': output '{name}' differs from PyTorch by up to {float(diff.max()):.3g} (allowed "
                f"{atol:g} + {rtol:g}·|value|). The export is not faithful; please report it with the model name")
    return worst


TOO_FEW_DECISIVE = "too few decisive detections to compare"  # in compare_detections' problem when it saw too little


def compare_detections(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray], box_tol: float,
                       score_tol: float = 1e-5, min_matched: float = 0.9, min_decisive: int = 10,
                       min_decisive_fraction: float = 0.5) -> tuple[Optional[str], float]:
    """Compare two sets of graph detections (``batch_index``, ``boxes``, ``scores``, ``classes``).

    A detection is *decisive* when no other score of its image (in either set) lies within ``score_tol`` of
    it, so float rounding can neither reorder it nor change what it suppresses. Per image, the detection
    counts must agree and at least ``min_matched`` of the decisive detections of each set need a partner in
    the other with the same class, a score within ``score_tol`` and a box within ``box_tol`` px (greedy NMS
    can cascade a near-tie into a few different later picks). Nearly equal scores (random-init heads) leave
    few decisive detections, and a comparison of ties would pass whatever the boxes: every image that has
    detections needs at least ``min_decisive`` decisive ones in each set, and at least
    ``min_decisive_fraction`` of its detections decisive, else the problem says :data:`TOO_FEW_DECISIVE` (a
    difference found in another image is reported first). Returns ``(problem or None, largest box difference of
    matched detections)``.
    """
    worst = 0.0
    inconclusive: Optional[str] = None
    images = np.union1d(ours["batch_index"], theirs["batch_index"])
    for image in images.tolist():
        sets = [{k: v[d["batch_index"] == image] for k, v in d.items()} for d in (ours, theirs)]
        if len(sets[0]["scores"]) != len(sets[1]["scores"]):
            return f"image {image}: {len(sets[0]['scores'])} vs {len(sets[1]['scores'])} detections", worst
        all_scores = np.concatenate([sets[0]["scores"], sets[1]["scores"]])
        for a, b in (sets, sets[::-1]):
            decisive = matched = 0
            for index, score in enumerate(a["scores"]):
                if (np.abs(all_scores - score) <= score_tol).sum() > 2:  # itself in both sets -> 2
                    continue
                decisive += 1
                partners = (b["classes"] == a["classes"][index]) & (np.abs(b["scores"] - score) <= score_tol)
                if partners.any():
                    diff = float(np.abs(b["boxes"][partners] - a["boxes"][index]).max(axis=1).min())
                    if diff <= box_tol:
                        matched += 1
                        worst = max(worst, diff)
            if decisive and matched < min_matched * decisive:
                return (f"image {image}: only {matched} of {decisive} decisive detections have the same class, "
                        f"score and box (within {box_tol:.3g} px)"), worst
            total = len(a["scores"])
            if inconclusive is None and (decisive < min_decisive or decisive < min_decisive_fraction * total):
                inconclusive = (f"image {image}: {TOO_FEW_DECISIVE}: {decisive} of {total} detections have no other "
                                f"score within {score_tol:g} (needs at least {min_decisive} and "
                                f"{min_decisive_fraction:.0%} of them)")
    return inconclusive, worst


def _input_is_half(session: Any) -> bool:
    return session.get_inputs()[0].type == "tensor(float16)"


def have_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True
