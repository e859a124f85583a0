"""One interface over onnxruntime and OpenVINO for exported EfficientDet files (no torch).

``open_session(path, backend)`` returns an :class:`InferenceSession`: ``run(feed) -> list of numpy outputs`` in
``output_names`` order, plus the file's effdet metadata (see ``effdet.export``).
"""
from __future__ import annotations

import json
import os
from typing import Any, Optional, Sequence, Union

import numpy as np

from effdet.choices import RUNTIMES  # no imports there: stays torch-free

__all__ = ["BACKENDS", "InferenceSession", "open_session", "read_onnx_metadata"]

BACKENDS = tuple(name for name in RUNTIMES if name != "torch")  # the ONNX runtimes
METADATA_KEY = "effdet"  # same as effdet.export.METADATA_KEY (kept here so this module never imports torch)
PathLike = Union[str, os.PathLike]


def _missing(package: str, extra: str) -> ImportError:
    return ImportError(f"running an exported model with this backend needs '{package}': "
                       f"pip install 'effdet-lightning[{extra}]' (or pip install {package})")


class InferenceSession:
    """An exported model opened by one backend.

    Attributes:
        backend: ``"onnxruntime"``, ``"openvino"`` or ``"openvino-bf16"``. path: the file.
        input_names, output_names: graph inputs/outputs in order. metadata: the effdet metadata dict.
    """

    backend = ""

    def __init__(self, path: PathLike, threads: Optional[int] = None):
        self.path = os.fspath(path)
        self.threads = threads
        self.input_names: list[str] = []
        self.output_names: list[str] = []
        self.metadata: dict[str, Any] = {}

    def run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs for a feed of any batch size (every input's first dimension is the batch). A graph exported with
        a fixed batch (no --dynamic-batch) runs in pieces of that size and the outputs are joined; for the
        detections form, the ``batch_index`` output is shifted so it counts images of the whole feed."""
        batch = len(next(iter(feed.values())))
        size = self.fixed_batch
        if size is None or batch <= size:
            return self._run(feed)
        pieces = [self._run({name: value[start:start + size] for name, value in feed.items()})
                  for start in range(0, batch, size)]
        if self.metadata.get("outputs") == "detections":  # outputs: batch_index, boxes, scores, classes
            for number, piece in enumerate(pieces):
                piece[0] = piece[0] + number * size
        return [np.concatenate(parts) for parts in zip(*pieces)]

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One run of the graph on a feed whose batch it accepts."""
        raise NotImplementedError

    @property
    def fixed_batch(self) -> Optional[int]:
        """The batch size the graph was exported with, or None when its batch dimension is free (--dynamic-batch)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, inputs={self.input_names}, outputs={self.output_names})"


class OnnxRuntimeSession(InferenceSession):
    backend = "onnxruntime"

    def __init__(self, path: PathLike, threads: Optional[int] = None, providers: Optional[Sequence[str]] = None):
        super().__init__(path, threads)
        try:
            import onnxruntime as ort
        except ImportError:
            raise _missing("onnxruntime", "deploy") from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        chosen = [p for p in (providers or ["CUDAExecutionProvider", "CPUExecutionProvider"]) if p in available]
        self.session = ort.InferenceSession(self.path, options, providers=chosen or ["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_type = self.session.get_inputs()[0].type
        custom = self.session.get_modelmeta().custom_metadata_map
        if METADATA_KEY not in custom:
            raise ValueError(f"'{self.path}' has no '{METADATA_KEY}' metadata: export it with effdet-export")
        self.metadata = json.loads(custom[METADATA_KEY])

    @property
    def fixed_batch(self) -> Optional[int]:
        size = self.session.get_inputs()[0].shape[0]
        return size if isinstance(size, int) and size > 0 else None

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.input_type == "tensor(float16)":
            feed = dict(feed, images=feed["images"].astype(np.float16))
        return self.session.run(self.output_names, feed)


class OpenVinoSession(InferenceSession):
    """OpenVINO on the CPU, reading the ONNX file directly; one compiled model per batch size.

    ``precision``: what OpenVINO runs the float layers in: ``"f32"`` (default: the same results as PyTorch within
    1e-4) or ``"bf16"`` (backend name ``"openvino-bf16"``: faster on CPUs with bfloat16 units, AVX512-BF16 or AMX;
    scores move by ~1e-2). Int8 layers of a quantized file stay int8 either way.
    """

    backend = "openvino"

    def __init__(self, path: PathLike, threads: Optional[int] = None, device: str = "CPU", precision: str = "f32"):
        super().__init__(path, threads)
        try:
            import openvino as ov
        except ImportError:
            raise _missing("openvino", "openvino") from None
        self.core = ov.Core()
        self.device = device
        if precision not in ("f32", "bf16"):
            raise ValueError(f"unknown OpenVINO precision {precision!r}; valid: 'f32', 'bf16'")
        if precision == "bf16":
            if "BF16" not in self.core.get_property(device, "OPTIMIZATION_CAPABILITIES"):
                raise ValueError(f"this {device} has no bfloat16 support (no AVX512-BF16 or AMX): use the 'openvino' "
                                 "backend (float32)")
            self.backend = "openvino-bf16"
        self.precision = precision
        self.model = self.core.read_model(self.path)
        self.input_names = [i.get_any_name() for i in self.model.inputs]
        self.output_names = [o.get_any_name() for o in self.model.outputs]
        if not self.model.has_rt_info(["framework", METADATA_KEY]):
            raise ValueError(f"'{self.path}' has no '{METADATA_KEY}' metadata: export it with effdet-export")
        self.metadata = json.loads(self.model.get_rt_info(["framework", METADATA_KEY]).astype(str))
        self.compiled: dict[int, Any] = {}

    @property
    def fixed_batch(self) -> Optional[int]:
        dim = self.model.inputs[0].get_partial_shape()[0]
        return dim.get_length() if dim.is_static else None

    def _compiled(self, batch: int) -> Any:
        if batch not in self.compiled:
            model = self.model
            if model.inputs[0].get_partial_shape().is_dynamic:
                model = model.clone()
                model.reshape({name: [batch] + [int(d) for d in self._static_tail(i)]
                               for i, name in enumerate(self.input_names)})
            # float32 unless asked: on CPUs with bfloat16 units (AVX512-BF16, AMX) OpenVINO's default runs float
            # graphs in bfloat16, whose 8-bit mantissa moves scores by ~1e-2 and reorders detections.
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": self.precision}
            if self.threads:
                config["INFERENCE_NUM_THREADS"] = int(self.threads)
            self.compiled[batch] = self.core.compile_model(model, self.device, config)
        return self.compiled[batch]

    def _static_tail(self, index: int) -> list[int]:
        return [d.get_length() for d in list(self.model.inputs[index].get_partial_shape())[1:]]

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        compiled = self._compiled(int(next(iter(feed.values())).shape[0]))
        results = compiled(feed)
        return [np.asarray(results[compiled.output(name)]) for name in self.output_names]


def open_session(path: PathLike, backend: str = "onnxruntime", threads: Optional[int] = None) -> InferenceSession:
    """Open an exported file with ``backend`` (``"onnxruntime"``, ``"openvino"`` or ``"openvino-bf16"``, see
    :class:`OpenVinoSession`); ``threads``: CPU threads (default: the backend's choice)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX file '{path}' does not exist")
    if backend == "onnxruntime":
        return OnnxRuntimeSession(path, threads)
    if backend in ("openvino", "openvino-bf16"):
        return OpenVinoSession(path, threads, precision="bf16" if backend == "openvino-bf16" else "f32")
    raise ValueError(f"unknown backend {backend!r}; valid: {list(BACKENDS)}")


def read_onnx_metadata(path: PathLike) -> dict[str, Any]:
    """The effdet metadata of an exported file, read with onnxruntime (else onnx, else OpenVINO)."""
    for backend in ("onnxruntime", "openvino"):
        try:
            return open_session(path, backend).metadata
        except ImportError:
            continue
    raise _missing("onnxruntime", "deploy")
