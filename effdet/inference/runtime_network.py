"""The Predictor's network on a runtime other than torch: the same pre- and post-processing around it.

A :class:`RuntimeNetwork` stands in for the :class:`~effdet.modeling.model.EfficientDet` module inside
:func:`effdet.modeling.decode.detect_batch`: it has ``.config`` and maps a **normalised** float32 batch ``[B, 3, H, W]``
(torch) to the raw per-level outputs ``(class_outputs, box_outputs)``, so letterboxing, normalisation, decoding,
NMS / soft-NMS, flip TTA and the undoing of the letterbox stay the torch code of the Predictor. A file exported with
NMS in the graph (its ``outputs`` is ``"detections"``) is run through :meth:`RuntimeNetwork.detect` instead.

The runtimes are those of :data:`effdet.choices.RUNTIMES`: ``"torch"`` is the module itself; the others run an ONNX
file with the runtime's class of the torch-free :mod:`effdet.runtime.sessions` (for a checkpoint the file is exported
on the fly with a free batch dimension, :func:`network_for_runtime`).
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..runtime.sessions import InferenceSession, OpenVinoSession, check_runtime, open_session
from ..modeling.variants import ModelConfig

__all__ = ["RuntimeNetwork", "detect_with_graph", "network_for_runtime"]


class RuntimeNetwork:
    """An exported file run by an ONNX runtime (onnxruntime, OpenVINO), with the interface of the torch model.

    Attributes:
        config: the model config of the export (``image_size`` = the export size).
        outputs: ``"raw"`` or ``"detections"``. session: the :class:`~effdet.runtime.InferenceSession`.
        runtime: the runtime's name.
    """

    def __init__(self, session: InferenceSession):
        self.session = session
        meta = session.metadata
        self.metadata = meta
        self.config = ModelConfig(**meta["config"])
        self.outputs: str = meta["outputs"]
        self.runtime = session.runtime

    def eval(self) -> RuntimeNetwork:
        return self

    def _feed(self, images: torch.Tensor, **extra: np.ndarray) -> dict[str, np.ndarray]:
        feed = {"images": np.ascontiguousarray(images.detach().float().cpu().numpy())}
        feed.update(extra)
        return {name: feed[name] for name in self.session.input_names}

    def __call__(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Normalised ``[B, 3, H, W]`` -> per-level ``(class_outputs, box_outputs)`` on ``images.device``."""
        if self.outputs != "raw":
            raise RuntimeError(f"'{self.session.path}' has NMS in the graph; use detect() (raw outputs need an "
                               "export without --nms)")
        if list(images.shape[-2:]) != list(self.config.image_size):
            raise ValueError(f"the exported graph takes {self.config.image_size[0]}x{self.config.image_size[1]} "
                             f"inputs, got {images.shape[-2]}x{images.shape[-1]}")
        outputs = [torch.from_numpy(np.asarray(o, np.float32)).to(images.device)
                   for o in self.session.run(self._feed(images))]
        levels = len(outputs) // 2
        return outputs[:levels], outputs[levels:]

    def detect(self, images: torch.Tensor, valid_sizes: Sequence[Sequence[float]]) -> list[dict[str, torch.Tensor]]:
        """Detections-form graph: normalised ``[B, 3, H, W]`` + valid (h, w) per image -> per image
        ``{"boxes" [K, 4] xyxy network px, "scores" [K], "labels" [K]}`` by decreasing score."""
        sizes = np.asarray(valid_sizes, np.float32).reshape(-1, 2)
        batch_index, boxes, scores, classes = self.session.run(self._feed(images, image_sizes=sizes))
        results = []
        for image in range(images.shape[0]):
            keep = batch_index == image
            order = np.argsort(-scores[keep], kind="stable")
            results.append({"boxes": torch.from_numpy(boxes[keep][order].astype(np.float32)).reshape(-1, 4),
                            "scores": torch.from_numpy(scores[keep][order].astype(np.float32)),
                            "labels": torch.from_numpy(classes[keep][order].astype(np.int64))})
        return results

    def __repr__(self) -> str:
        return f"RuntimeNetwork({self.runtime}, {self.session.path!r}, outputs={self.outputs})"


def network_for_runtime(model: nn.Module, runtime: str, image_size: Sequence[int] | None = None,
                        threads: int | None = None, **export_options: Any) -> nn.Module | RuntimeNetwork:
    """``model`` itself for ``"torch"``; otherwise the model exported (raw outputs, free batch, BN folded) to a
    temporary ONNX file and opened with ``runtime``. The file goes through ``onnx.checker``; the comparison with
    PyTorch runs only with ``verify=True``."""
    if check_runtime(runtime) == "torch":
        return model
    import onnx

    from ..export.onnx import export_onnx

    with tempfile.TemporaryDirectory(prefix="effdet-onnx-") as folder:
        path = Path(folder) / "model.onnx"
        verify = export_options.pop("verify", False)
        export_onnx(model, path, image_size=image_size, outputs="raw", dynamic_batch=True, verify=verify,
                    **export_options)
        if not verify:  # verify=True already ran it
            onnx.checker.check_model(str(path), full_check=True)
        session = open_session(path, runtime, threads)
        if isinstance(session, OpenVinoSession):  # any precision
            session._compiled(1)  # compile while the file exists (OpenVINO keeps the model in memory)
        return RuntimeNetwork(session)


def detect_with_graph(network: RuntimeNetwork, images: torch.Tensor, scales: torch.Tensor,
                      orig_sizes: torch.Tensor, score_threshold: float = 0.0,
                      max_detections: int | None = None) -> list[dict[str, torch.Tensor]]:
    """:func:`effdet.modeling.decode.detect_batch` for a graph with NMS inside: same normalisation, valid areas and
    undoing of the letterbox; decoding and NMS are the graph's (hard NMS, the export's settings). Detections
    scoring below ``score_threshold`` are dropped and at most ``max_detections`` kept per image (the graph already
    applied the export's own threshold and limit: these can only tighten them)."""
    from ..modeling.decode import valid_image_sizes
    from ..ops.nms import scale_boxes_to_original
    from ..data.preprocess import normalize

    config = network.config
    inputs = normalize(images, config.mean, config.std)
    scale_list = [float(s) for s in scales]
    sizes = [(int(h), int(w)) for h, w in orig_sizes.tolist()]
    valid = valid_image_sizes(sizes, scale_list, inputs.shape[-2:])
    results = []
    for det, s, size in zip(network.detect(inputs, valid), scale_list, sizes):
        keep = int((det["scores"] >= score_threshold).sum())  # sorted by decreasing score
        keep = keep if max_detections is None else min(keep, int(max_detections))
        det = {key: value[:keep] for key, value in det.items()}
        results.append(dict(det, boxes=scale_boxes_to_original(det["boxes"], s, size)))
    return results



def __getattr__(name: str) -> Any:
    """The names of ``effdet.backends``, an older name of this module (:mod:`effdet._moved` maps the module)."""
    if name not in ("BACKENDS", "OnnxBackend", "backend_from_model", "check_backend"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ..choices import RUNTIMES
    from ..deprecation import deprecated_name

    old = {"BACKENDS": ("effdet.choices.RUNTIMES", RUNTIMES), "OnnxBackend": ("RuntimeNetwork", RuntimeNetwork),
           "backend_from_model": ("network_for_runtime", network_for_runtime),
           "check_backend": ("effdet.runtime.check_runtime", check_runtime)}
    deprecated_name(f"effdet.backends.{name}", old[name][0])
    return old[name][1]
