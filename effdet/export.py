"""ONNX export of EfficientDet: raw per-level head outputs, or final detections with NMS inside the graph.

Two graph forms (``outputs=``):

``"raw"``
    input ``images`` float32 ``[B, 3, H, W]``, **normalised** (:func:`effdet.preprocess.normalize`);
    outputs ``class_<l>`` ``[B, A·C, H_l, W_l]`` logits and ``box_<l>`` ``[B, A·4, H_l, W_l]`` codes for each
    level ``l = min_level … max_level`` (the raw ``EfficientDet`` forward).

``"detections"``
    inputs ``images`` as above and ``image_sizes`` float32 ``[B, 2]``: the (height, width) of the valid,
    non-padding area of each letterboxed image in network pixels (boxes are clipped to it, as the PyTorch
    path does). Inside the graph: per level, the largest class logit of every anchor; the top-k anchors by
    that maximum and then the top-k anchor×class logits among them (the exact global top-k of
    :func:`effdet.postprocess.topk_logits`); box decoding against the anchors of the export size;
    clipping; sigmoid; per-class hard NMS (ONNX ``NonMaxSuppression`` over class-offset boxes, as
    ``torchvision.ops.batched_nms``). Outputs, grouped by image and by decreasing score within an image:
    ``batch_index`` int64 ``[M]``, ``boxes`` float32 ``[M, 4]`` xyxy in network-input pixels, ``scores``
    float32 ``[M]``, ``classes`` int64 ``[M]`` (0..C-1). At most ``max_detections`` per image.

TF 'SAME' padding (``padding="same"`` models, i.e. the TF-ported checkpoints) depends on the input size; it is
replaced by static pads computed at the export size (:func:`freeze_same_padding`), so the graph has no
shape arithmetic. Batch norms are folded into the convolutions first (``fold_bn``).

The file carries metadata (:data:`METADATA_KEY`, JSON): class names, category ids, mean/std, input size, the
model config, the graph form and the post-processing settings. :func:`export_onnx` runs ``onnx.checker`` and,
when onnxruntime is installed, compares the file with PyTorch on one image (:class:`ExportMismatchError`).
"""
from __future__ import annotations

import copy
import dataclasses
import io
import json
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones.layers import Conv2dSame, MaxPool2dSame, fuse_batchnorm, same_padding

from .anchors import BoxCoder
from .inference import anchors_for
from .postprocess_settings import PostprocessSettings
from .runtime.sessions import METADATA_KEY  # defined in the torch-free runtime, which reads it
from .types import PathLike
from .variants import ModelConfig

__all__ = [
    "METADATA_KEY",
    "OUTPUT_FORMS",
    "DetectionGraph",
    "ExportMismatchError",
    "RawGraph",
    "export_onnx",
    "freeze_same_padding",
    "prepare_for_export",
    "read_metadata",
]

OUTPUT_FORMS = ("raw", "detections")
OPSET = 17


class ExportMismatchError(RuntimeError):
    """The exported file does not reproduce the PyTorch model's outputs on the check image."""


# ----------------------------------------------------------------------------------- static TF padding


class _StaticPadConv2d(nn.Conv2d):
    """``nn.Conv2d`` preceded by a fixed (left, right, top, bottom) zero pad: TF 'SAME' frozen at one size."""

    def __init__(self, conv: nn.Conv2d, pads: tuple[int, int, int, int]):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, conv.dilation,
                         conv.groups, conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
        self.weight, self.bias = conv.weight, conv.bias
        self.pads = pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        return self._conv_forward(x, self.weight, self.bias)


class _StaticPadMaxPool2d(nn.Module):
    """Max-pool preceded by a fixed −inf pad (TF 'SAME' frozen at one size)."""

    def __init__(self, kernel_size: int, stride: int, pads: tuple[int, int, int, int]):
        super().__init__()
        self.kernel_size, self.stride, self.pads = kernel_size, stride, pads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads, value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride)


def _pads(size: Sequence[int], kernel: int, stride: int, dilation: int = 1) -> tuple[int, int, int, int]:
    top, bottom = same_padding(int(size[0]), kernel, stride, dilation)
    left, right = same_padding(int(size[1]), kernel, stride, dilation)
    return left, right, top, bottom


def freeze_same_padding(model: nn.Module, image_size: Sequence[int]) -> nn.Module:
    """Replace every run-time TF 'SAME' pad (``Conv2dSame``, ``MaxPool2dSame``) by the static pads it computes
    for an input of ``image_size`` (h, w), in place. The model then only runs at that input size (any batch).

    The input size of each such layer is found by one forward pass with hooks.
    """
    dynamic = [m for m in model.modules() if isinstance(m, (Conv2dSame, MaxPool2dSame))]
    if not dynamic:
        return model
    seen: dict[int, tuple[int, int]] = {}

    def record(module: nn.Module, args: tuple) -> None:
        seen.setdefault(id(module), tuple(args[0].shape[-2:]))

    hooks = [m.register_forward_pre_hook(record) for m in dynamic]
    parameter = next(model.parameters())
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, *image_size, device=parameter.device, dtype=parameter.dtype))
    finally:
        for hook in hooks:
            hook.remove()
    replacements = {}
    for module in dynamic:
        size = seen[id(module)]
        if isinstance(module, Conv2dSame):
            pads = _pads(size, module.kernel_size[0], module.stride[0], module.dilation[0])
            replacements[id(module)] = _StaticPadConv2d(module, pads)
        else:
            replacements[id(module)] = _StaticPadMaxPool2d(module.kernel_size, module.stride,
                                                           _pads(size, module.kernel_size, module.stride))
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in replacements:
                setattr(parent, name, replacements[id(child)])
    return model


def prepare_for_export(model: nn.Module, image_size: Sequence[int], fold_bn: bool = True) -> nn.Module:
    """An eval-mode copy of ``model`` ready to trace at ``image_size``: BN folded (``fold_bn``), static
    'SAME' pads, contiguous memory format. The caller's model is untouched."""
    model = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    if fold_bn:
        fuse_batchnorm(model)
    freeze_same_padding(model, image_size)
    return model


# --------------------------------------------------------------------------------------------- graphs


class RawGraph(nn.Module):
    """Normalised images ``[B, 3, H, W]`` -> ``(class_l…, box_l…)`` flat tuple of per-level outputs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        class_outputs, box_outputs = self.model(images)
        return tuple(class_outputs) + tuple(box_outputs)


class DetectionGraph(nn.Module):
    """Normalised images ``[B, 3, H, W]`` + valid sizes ``[B, 2]`` -> final detections (see the module doc).

    Args:
        model: the detector, traced at ``image_size`` (h, w).
        settings: ``pre_nms_top_k``, ``score_threshold``, ``iou_threshold``, ``max_detections`` are used
            (NMS is always hard NMS here).
    """

    def __init__(self, model: nn.Module, config: ModelConfig, image_size: Sequence[int],
                 settings: PostprocessSettings):
        super().__init__()
        self.model = model
        self.num_classes = config.num_classes
        self.num_anchors = config.num_anchors
        anchors = anchors_for(config, image_size, torch.device("cpu"))
        self.register_buffer("anchors", anchors.clone(), persistent=False)
        self.top_k = min(int(settings.pre_nms_top_k), anchors.shape[0])
        self.score_threshold = float(settings.score_threshold)
        self.iou_threshold = float(settings.iou_threshold)
        self.max_detections = int(settings.max_detections)
        # boxes of different classes are moved this far apart so that one NMS never mixes classes
        self.class_offset = float(max(image_size)) + 1.0

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        class_outputs, box_outputs = self.model(images)
        batch = images.shape[0]
        classes_per_level, codes_per_level, max_per_level = [], [], []
        for logits, codes in zip(class_outputs, box_outputs):
            logits = logits.float().permute(0, 2, 3, 1).reshape(batch, -1, self.num_classes)  # [B, N_l, C]
            classes_per_level.append(logits)
            max_per_level.append(logits.amax(dim=2))
            codes_per_level.append(codes.float().permute(0, 2, 3, 1).reshape(batch, -1, 4))
        logits = torch.cat(classes_per_level, dim=1)  # [B, N, C], anchor order level -> y -> x -> anchor
        codes = torch.cat(codes_per_level, dim=1)  # [B, N, 4]
        anchor_max = torch.cat(max_per_level, dim=1)  # [B, N]
        # exact top-k over anchors x classes: only the top-k anchors by their best class can hold it
        _, best_anchors = anchor_max.topk(self.top_k, dim=1)  # [B, K]
        rows = torch.gather(logits, 1, best_anchors[..., None].expand(-1, -1, self.num_classes))  # [B, K, C]
        values, flat = rows.reshape(batch, -1).topk(self.top_k, dim=1)  # [B, K]
        anchor_idx = torch.gather(best_anchors, 1, torch.div(flat, self.num_classes, rounding_mode="floor"))
        classes = flat % self.num_classes  # [B, K]
        picked_codes = torch.gather(codes, 1, anchor_idx[..., None].expand(-1, -1, 4))  # [B, K, 4]
        boxes = BoxCoder().decode(picked_codes, self.anchors[anchor_idx])  # [B, K, 4] xyxy
        limits = torch.stack([image_sizes[:, 1], image_sizes[:, 0], image_sizes[:, 1], image_sizes[:, 0]], dim=1)
        boxes = torch.min(boxes.clamp(min=0), limits[:, None, :].to(boxes.dtype))
        scores = values.sigmoid()
        shifted = boxes + (classes.to(boxes.dtype) * self.class_offset)[..., None]
        selected = _non_max_suppression(shifted, scores[:, None, :], self.max_detections, self.iou_threshold,
                                        self.score_threshold)  # [M, 3] (image, 0, candidate)
        image_idx, candidate = selected[:, 0], selected[:, 2]
        return (image_idx, boxes[image_idx, candidate], scores[image_idx, candidate],
                classes[image_idx, candidate])


class _NonMaxSuppression(torch.autograd.Function):
    """ONNX ``NonMaxSuppression`` (boxes [B, K, 4], scores [B, 1, K]) -> selected [M, 3]; eager: torchvision."""

    @staticmethod
    def forward(ctx, boxes, scores, max_output, iou_threshold, score_threshold):  # noqa: D401
        from torchvision.ops import nms

        selected = []
        for image in range(boxes.shape[0]):
            image_scores = scores[image, 0]
            candidates = (image_scores > score_threshold).nonzero().flatten()
            keep = nms(boxes[image, candidates], image_scores[candidates], float(iou_threshold))[:int(max_output)]
            chosen = candidates[keep]
            selected.append(torch.stack([torch.full_like(chosen, image), torch.zeros_like(chosen), chosen], dim=1))
        return torch.cat(selected) if selected else torch.zeros((0, 3), dtype=torch.int64)

    @staticmethod
    def symbolic(g, boxes, scores, max_output, iou_threshold, score_threshold):
        return g.op("NonMaxSuppression", boxes, scores,
                    g.op("Constant", value_t=torch.tensor([int(max_output)], dtype=torch.int64)),
                    g.op("Constant", value_t=torch.tensor([float(iou_threshold)], dtype=torch.float32)),
                    g.op("Constant", value_t=torch.tensor([float(score_threshold)], dtype=torch.float32)),
                    center_point_box_i=0)


def _non_max_suppression(boxes: torch.Tensor, scores: torch.Tensor, max_output: int, iou_threshold: float,
                         score_threshold: float) -> torch.Tensor:
    return _NonMaxSuppression.apply(boxes, scores, max_output, iou_threshold, score_threshold)


# ----------------------------------------------------------------------------------------- metadata


def build_metadata(config: ModelConfig, image_size: Sequence[int], output_form: str,
                   class_names: Sequence[str], category_ids: Sequence[int], settings: PostprocessSettings,
                   half: bool, level_names: Sequence[str]) -> dict[str, Any]:
    return {
        "format_version": 1,
        "outputs": output_form,
        "model": config.name,
        "config": dict(config.to_dict(), image_size=[int(s) for s in image_size]),
        "image_size": [int(s) for s in image_size],
        "mean": [float(v) for v in config.mean],
        "std": [float(v) for v in config.std],
        "class_names": [str(n) for n in class_names],
        "category_ids": [int(c) for c in category_ids],
        "postprocess": dataclasses.asdict(settings) | ({"nms": "hard"} if output_form == "detections" else {}),
        "levels": list(level_names),
        "half": bool(half),
    }


def read_metadata(path_or_model: Any) -> dict[str, Any]:
    """The :data:`METADATA_KEY` JSON of an exported file (path, bytes or ``onnx.ModelProto``)."""
    import onnx

    model = path_or_model
    if not hasattr(model, "metadata_props"):
        model = onnx.load(str(path_or_model), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise ValueError(f"'{path_or_model}' has no '{METADATA_KEY}' metadata: was it written by effdet.export?")


# ------------------------------------------------------------------------------------------- export


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


def export_onnx(
    model: nn.Module,
    path: PathLike,
    *,
    image_size: Optional[Sequence[int]] = None,
    outputs: str = "raw",
    class_names: Optional[Sequence[str]] = None,
    category_ids: Optional[Sequence[int]] = None,
    settings: Optional[PostprocessSettings] = None,
    dynamic_batch: bool = False,
    half: bool = False,
    fold_bn: bool = True,
    verify: bool = True,
    opset: int = OPSET,
) -> dict[str, Any]:
    """Export ``model`` (an :class:`~effdet.model.EfficientDet`) to ONNX at ``path``.

    Args:
        image_size: (h, w) of the graph input (default: the model config's); multiples of 8.
        outputs: ``"raw"`` or ``"detections"`` (see the module doc).
        class_names, category_ids: written into the metadata (default ``"1".."C"`` / ``1..C``).
        settings: post-processing of the ``detections`` form (default :class:`PostprocessSettings`, hard NMS).
        dynamic_batch: leave the batch dimension free (else it is 1).
        half: float16 weights and activations (for GPUs; decoding in the graph stays float32).
        fold_bn: fold batch norms into convolutions (same outputs up to float rounding).
        verify: run ``onnx.checker`` and, when onnxruntime is installed, compare with PyTorch on one image.

    Returns:
        the metadata written into the file, plus ``"max_abs_diff"`` of the check (None when not run).
    """
    import onnx

    if outputs not in OUTPUT_FORMS:
        raise ValueError(f"outputs must be one of {list(OUTPUT_FORMS)}, got {outputs!r}")
    config: ModelConfig = model.config
    image_size = [int(s) for s in (image_size if image_size is not None else config.image_size)]
    if len(image_size) != 2 or any(s <= 0 or s % 2 ** config.min_level for s in image_size):
        raise ValueError(f"image_size must be (h, w) multiples of {2 ** config.min_level}, got {image_size}")
    settings = settings or PostprocessSettings(nms="hard")
    class_names = list(class_names) if class_names is not None else [str(i + 1) for i in range(config.num_classes)]
    category_ids = list(category_ids) if category_ids is not None else list(range(1, config.num_classes + 1))
    if len(class_names) != config.num_classes or len(category_ids) != config.num_classes:
        raise ValueError(f"{len(class_names)} class names / {len(category_ids)} category ids for a model with "
                         f"{config.num_classes} classes")

    prepared = prepare_for_export(model, image_size, fold_bn=fold_bn)
    if half:
        prepared = prepared.half()
    levels = [str(level) for level in range(config.min_level, config.max_level + 1)]
    if outputs == "raw":
        graph: nn.Module = RawGraph(prepared)
        input_names = ["images"]
        output_names = [f"class_{l}" for l in levels] + [f"box_{l}" for l in levels]
    else:
        graph = DetectionGraph(prepared, config, image_size, settings)
        input_names = ["images", "image_sizes"]
        output_names = ["batch_index", "boxes", "scores", "classes"]
    graph.eval()
    device = next(prepared.parameters()).device
    graph.to(device)
    inputs = check_inputs(config, image_size, batch=2 if dynamic_batch else 1)
    example = [torch.from_numpy(inputs[n]).to(device) for n in input_names]
    example[0] = example[0].to(next(prepared.parameters()).dtype)
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {n: {0: "batch"} for n in input_names}
        if outputs == "raw":
            dynamic_axes.update({n: {0: "batch"} for n in output_names})
        else:
            dynamic_axes.update({n: {0: "detections"} for n in output_names})
    elif outputs == "detections":
        dynamic_axes = {n: {0: "detections"} for n in output_names}

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python shape checks that are constant here
        torch.onnx.export(graph, tuple(example), buffer, input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    metadata = build_metadata(config, image_size, outputs, class_names, category_ids, settings, half, levels)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    proto.producer_name = "effdet-lightning"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path))
    max_diff = None
    if verify:
        onnx.checker.check_model(str(path), full_check=True)
        if _have_onnxruntime():
            reference = graph if not half else _float_graph(model, config, image_size, outputs, settings, fold_bn)
            tolerance = (1e-2, 1e-2) if half else (1e-4, 1e-4)
            max_diff = compare_with_onnxruntime(path, reference, input_names, output_names, inputs, *tolerance)
    return dict(metadata, max_abs_diff=max_diff)


def _float_graph(model, config, image_size, outputs, settings, fold_bn) -> nn.Module:
    prepared = prepare_for_export(model, image_size, fold_bn=fold_bn).float()
    graph = RawGraph(prepared) if outputs == "raw" else DetectionGraph(prepared, config, image_size, settings)
    return graph.eval().to(next(prepared.parameters()).device)


def _have_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True
