"""Run exported EfficientDet ONNX files without PyTorch: onnxruntime (or OpenVINO), numpy and OpenCV only.

    from effdet.runtime import OnnxDetector
    detector = OnnxDetector("model.onnx")                # written by `effdet-export --nms`
    for det in detector.predict(["a.jpg", bgr_image]):
        det["boxes"], det["scores"], det["labels"], det["names"], det["category_ids"]

Nothing in this package imports torch (``effdet/__init__`` is lazy and ``effdet.data.preprocess`` imports torch only
inside its tensor functions), so ``pip install --no-deps effdet-lightning`` plus the ``deploy`` extra's
packages (onnxruntime, numpy, opencv-python-headless) is enough to run it.

The runtimes (:mod:`effdet.runtime.sessions`): one small class per runtime (onnxruntime, openvino, openvino-bf16),
chosen by name with ``runtime=``; the file's metadata key :data:`METADATA_KEY` is defined there.
"""
from __future__ import annotations

from typing import Any

from .detector import OnnxDetector
from .sessions import (METADATA_KEY, ONNX_RUNTIMES, InferenceSession, check_runtime, open_session, read_onnx_metadata,
                       session_class)

__all__ = ["METADATA_KEY", "ONNX_RUNTIMES", "InferenceSession", "OnnxDetector", "check_runtime", "open_session",
           "read_onnx_metadata", "session_class"]


def __getattr__(name: str) -> Any:
    if name == "BACKENDS":  # the old name of ONNX_RUNTIMES (warns)
        from . import sessions

        return sessions.BACKENDS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
