"""Export: ONNX graphs (:mod:`.onnx`: raw outputs, or detections with NMS inside), static TF 'SAME' pads
(:mod:`.padding`), the file's metadata (:mod:`.metadata`), the check against PyTorch (:mod:`.verify`) and int8
quantization (:mod:`.quantize`).

``effdet.export`` was a module before (issue 22): every name it offered still comes from here, loaded from its
module on first use.
"""
from __future__ import annotations

from .._moved import lazy_exports

_EXPORTS = {
    "OPSET": ".onnx", "OUTPUT_FORMS": ".onnx", "DetectionGraph": ".onnx", "RawGraph": ".onnx", "export_onnx": ".onnx",
    "freeze_same_padding": ".padding", "prepare_for_export": ".padding",
    "METADATA_KEY": ".metadata", "build_metadata": ".metadata", "read_metadata": ".metadata",
    "ExportMismatchError": ".verify", "TOO_FEW_DECISIVE": ".verify", "check_inputs": ".verify",
    "compare_detections": ".verify", "compare_with_onnxruntime": ".verify",
    "QUANTIZERS": ".quantize", "quantize_file": ".quantize",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)  # and the old module's names that moved (effdet._moved)
