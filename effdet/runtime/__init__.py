"""Run exported EfficientDet ONNX files without PyTorch: onnxruntime (or OpenVINO), numpy and OpenCV only.

    from effdet.runtime import OnnxDetector
    detector = OnnxDetector("model.onnx")                # written by `effdet-export --nms`
    for det in detector.predict(["a.jpg", bgr_image]):
        det["boxes"], det["scores"], det["labels"], det["names"], det["category_ids"]

Nothing in this package imports torch (``effdet/__init__`` is lazy and ``effdet.preprocess`` imports torch only
inside its tensor functions), so ``pip install --no-deps effdet-lightning`` plus the ``deploy`` extra's
packages (onnxruntime, numpy, opencv-python-headless) is enough to run it.
"""
from .detector import OnnxDetector
from .sessions import BACKENDS, InferenceSession, open_session, read_onnx_metadata

__all__ = ["BACKENDS", "InferenceSession", "OnnxDetector", "open_session", "read_onnx_metadata"]
