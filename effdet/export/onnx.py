"""ONNX export of EfficientDet: raw per-level head outputs, or final detections with NMS inside the graph.

Two graph forms (``outputs=``):

``"raw"``
    input ``images`` float32 ``[B, 3, H, W]``, **normalised** (:func:`effdet.data.preprocess.normalize`);
    outputs ``class_<l>`` ``[B, A·C, H_l, W_l]`` logits and ``box_<l>`` ``[B, A·4, H_l, W_l]`` codes for each
    level ``l = min_level … max_level`` (the raw ``EfficientDet`` forward).

``"detections"``
    inputs ``images`` as above and ``image_sizes`` float32 ``[B, 2]``: the (height, width) of the valid,
    non-padding area of each letterboxed image in network pixels (boxes are clipped to it, as the PyTorch
    path does). Inside the graph: per level, the largest class logit of every anchor; the top-k anchors by
    that maximum and then the top-k anchor×class logits among them (the exact global top-k of
    :func:`effdet.ops.nms.topk_logits`); box decoding against the anchors of the export size;
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

import io
import json
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from ..modeling.postprocess_settings import PostprocessSettings
from ..modeling.anchors import anchors_for
from ..modeling.variants import ModelConfig
from ..ops.box_coder import BoxCoder
from ..ops.nms import non_max_suppression
from ..types import PathLike
from .metadata import METADATA_KEY, build_metadata
from .padding import prepare_for_export
from .verify import check_inputs, compare_with_onnxruntime, have_onnxruntime

__all__ = ["OPSET", "OUTPUT_FORMS", "DetectionGraph", "RawGraph", "export_onnx"]

OUTPUT_FORMS = ("raw", "detections")
OPSET = 17


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
        selected = non_max_suppression(shifted, scores[:, None, :], self.max_detections, self.iou_threshold,
                                        self.score_threshold)  # [M, 3] (image, 0, candidate)
        image_idx, candidate = selected[:, 0], selected[:, 2]
        return (image_idx, boxes[image_idx, candidate], scores[image_idx, candidate],
                classes[image_idx, candidate])


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
    """Export ``model`` (an :class:`~effdet.modeling.model.EfficientDet`) to ONNX at ``path``.

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
        if have_onnxruntime():
            reference = graph if not half else _float_graph(model, config, image_size, outputs, settings, fold_bn)
            tolerance = (1e-2, 1e-2) if half else (1e-4, 1e-4)
            max_diff = compare_with_onnxruntime(path, reference, input_names, output_names, inputs, *tolerance)
    return dict(metadata, max_abs_diff=max_diff)


def _float_graph(model, config, image_size, outputs, settings, fold_bn) -> nn.Module:
    prepared = prepare_for_export(model, image_size, fold_bn=fold_bn).float()
    graph = RawGraph(prepared) if outputs == "raw" else DetectionGraph(prepared, config, image_size, settings)
    return graph.eval().to(next(prepared.parameters()).device)


