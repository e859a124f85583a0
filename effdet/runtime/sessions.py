"""The network runtimes of exported EfficientDet files, without torch: one small class per runtime.

A runtime is a subclass of :class:`InferenceSession` named by its ``runtime`` attribute (one of
:data:`effdet.choices.RUNTIMES` besides ``"torch"``, which runs the PyTorch module itself): it opens the file, reads
the effdet metadata (:data:`METADATA_KEY`) and runs the graph, ``run(feed) -> list of numpy outputs`` in
``output_names`` order. :func:`open_session` picks the class by name. The torch-free runtime
(:class:`~effdet.runtime.OnnxDetector`), the Predictor (through :class:`effdet.inference.runtime_network.RuntimeNetwork`) and
``effdet.export`` all use these.
"""
from __future__ import annotations

import json
import os
from typing import Any, ClassVar, Sequence

import numpy as np

from ..choices import RUNTIMES  # no imports there: stays torch-free
from ..deprecation import deprecated_name, renamed_keyword
from ..types import PathLike

__all__ = ["METADATA_KEY", "ONNX_RUNTIMES", "InferenceSession", "OnnxRuntimeSession", "OpenVinoBf16Session",
           "OpenVinoSession", "check_runtime", "open_session", "read_onnx_metadata", "session_class"]

ONNX_RUNTIMES: tuple[str, ...] = tuple(name for name in RUNTIMES if name != "torch")  # the runtimes of exported files
METADATA_KEY = "effdet"  # the key of the JSON metadata in an exported file (written by effdet.export)


def check_runtime(name: str, valid: Sequence[str] = RUNTIMES) -> str:
    """``name`` if it is one of the ``valid`` runtimes, else a ``ValueError`` that lists them."""
    if name not in valid:
        raise ValueError(f"unknown runtime {name!r}; valid: {list(valid)}")
    return name


def _missing(package: str, extra: str) -> ImportError:
    return ImportError(f"running an exported model with this runtime needs '{package}': "
                       f"pip install 'effdet-lightning[{extra}]' (or pip install {package})")


class InferenceSession:
    """An exported model opened by one runtime; a subclass per runtime, found by :func:`session_class`.

    Attributes:
        runtime: the runtime's name (``"onnxruntime"``, ``"openvino"``, ``"openvino-bf16"``). path: the file.
        input_names, output_names: graph inputs/outputs in order. metadata: the effdet metadata dict.
    """

    runtime: ClassVar[str] = ""
    _classes: ClassVar[dict[str, type[InferenceSession]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        check_runtime(cls.runtime, ONNX_RUNTIMES)  # every runtime is named in effdet.choices.RUNTIMES
        InferenceSession._classes[cls.runtime] = cls

    def __init__(self, path: PathLike, threads: int | None = None):
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
    def fixed_batch(self) -> int | None:
        """The batch size the graph was exported with, or None when its batch dimension is free (--dynamic-batch)."""
        return None

    @property
    def backend(self) -> str:
        """Deprecated name of :attr:`runtime`."""
        deprecated_name(f"{type(self).__name__}.backend", "runtime")
        return self.runtime

    def _read_metadata(self, text: str | None) -> dict[str, Any]:
        if text is None:
            raise ValueError(f"'{self.path}' has no '{METADATA_KEY}' metadata: export it with effdet-export")
        return json.loads(text)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, inputs={self.input_names}, outputs={self.output_names})"


class OnnxRuntimeSession(InferenceSession):
    """onnxruntime: CUDA when its provider is installed, else the CPU."""

    runtime = "onnxruntime"

    def __init__(self, path: PathLike, threads: int | None = None, providers: Sequence[str] | None = None):
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
        self.metadata = self._read_metadata(self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY))

    @property
    def fixed_batch(self) -> int | None:
        size = self.session.get_inputs()[0].shape[0]
        return size if isinstance(size, int) and size > 0 else None

    def _run(self, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.input_type == "tensor(float16)":
            feed = dict(feed, images=feed["images"].astype(np.float16))
        return self.session.run(self.output_names, feed)


class OpenVinoSession(InferenceSession):
    """OpenVINO on the CPU, reading the ONNX file directly; one compiled model per batch size. Float layers run in
    float32: the same results as PyTorch within 1e-4 (int8 layers of a quantized file stay int8)."""

    runtime = "openvino"
    precision: ClassVar[str] = "f32"  # OpenVINO's INFERENCE_PRECISION_HINT

    def __init__(self, path: PathLike, threads: int | None = None, device: str = "CPU"):
        super().__init__(path, threads)
        try:
            import openvino as ov
        except ImportError:
            raise _missing("openvino", "openvino") from None
        self.core = ov.Core()
        self.device = device
        self._check_device()
        self.model = self.core.read_model(self.path)
        self.input_names = [i.get_any_name() for i in self.model.inputs]
        self.output_names = [o.get_any_name() for o in self.model.outputs]
        key = ["framework", METADATA_KEY]
        self.metadata = self._read_metadata(self.model.get_rt_info(key).astype(str)
                                            if self.model.has_rt_info(key) else None)
        self.compiled: dict[int, Any] = {}

    def _check_device(self) -> None:
        """Refuse a device this runtime cannot use (float32 runs everywhere)."""

    @property
    def fixed_batch(self) -> int | None:
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


class OpenVinoBf16Session(OpenVinoSession):
    """OpenVINO with the float layers in bfloat16: faster on CPUs with bfloat16 units (AVX512-BF16 or AMX), scores
    move by ~1e-2. Refused on a CPU without them."""

    runtime = "openvino-bf16"
    precision = "bf16"

    def _check_device(self) -> None:
        if "BF16" not in self.core.get_property(self.device, "OPTIMIZATION_CAPABILITIES"):
            raise ValueError(f"this {self.device} has no bfloat16 support (no AVX512-BF16 or AMX): use the "
                             "'openvino' runtime (float32)")


def session_class(runtime: str) -> type[InferenceSession]:
    """The class of the runtime named ``runtime`` (one of :data:`ONNX_RUNTIMES`)."""
    return InferenceSession._classes[check_runtime(runtime, ONNX_RUNTIMES)]


def open_session(path: PathLike, runtime: str = "onnxruntime", threads: int | None = None, *,
                 backend: str | None = None) -> InferenceSession:
    """Open an exported file with ``runtime`` (``"onnxruntime"``, ``"openvino"`` or ``"openvino-bf16"``);
    ``threads``: CPU threads (default: the runtime's choice). ``backend`` is the deprecated name of ``runtime``."""
    runtime = renamed_keyword("open_session", "backend", backend, "runtime", runtime, "onnxruntime")
    cls = session_class(runtime)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ONNX file '{path}' does not exist")
    return cls(path, threads)


def read_onnx_metadata(path: PathLike) -> dict[str, Any]:
    """The effdet metadata of an exported file, read with onnxruntime (else OpenVINO)."""
    for runtime in ("onnxruntime", "openvino"):
        try:
            return open_session(path, runtime).metadata
        except ImportError:
            continue
    raise _missing("onnxruntime", "deploy")


def __getattr__(name: str) -> Any:
    if name == "BACKENDS":  # the old name of ONNX_RUNTIMES
        deprecated_name(f"{__name__}.BACKENDS", "ONNX_RUNTIMES")
        return ONNX_RUNTIMES
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
