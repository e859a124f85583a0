"""Int8 post-training static quantization of exported ONNX files with ONNX Runtime's quantization tools.

Calibration feeds N images of the user's data through the same letterbox and normalisation as inference
(``effdet.runtime.OnnxDetector.preprocess``) and records activation ranges (MinMax). Weights are quantized
per output channel (int8, symmetric, 7-bit range: see :data:`REDUCE_RANGE`), activations per tensor (uint8,
asymmetric), in the QDQ format, which onnxruntime fuses into integer convolutions. Only the network's convolutions
are quantized; decoding, top-k and NMS of a detections-form graph stay float32.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import numpy as np

from .preprocess import ImageReadError, load_image

__all__ = ["quantize_file", "calibration_images"]

PathLike = Union[str, os.PathLike]
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
QUANTIZED_OPS = ["Conv"]  # the network only: decode, top-k and NMS (Mul/Add/Sigmoid on boxes and scores) stay float
# Convolutions left in float32 (substrings of the exported node names): the class and box prediction convs, whose
# outputs are the logits and box codes themselves (a per-tensor uint8 range over all anchors' logits loses the
# small score differences that rank detections), and the stem, which sees the raw normalised image.
FLOAT_CONVS = ("/predict/", "/stem/")
# Weights in [-64, 64] instead of [-128, 127]. On x86 CPUs without VNNI (AVX2, most AVX-512), onnxruntime's uint8 x
# int8 kernels multiply-add pairs of products into int16 (vpmaddubsw), which saturates with full-range weights;
# the onnxruntime quantization docs recommend reduce_range there. Measured on the fully trained demo model on this
# AVX2 machine (README, "int8"): AP 0.485 with full-range weights, 0.646 with the 7-bit range (fp32: 0.644). A file
# is quantized once and may run on any CPU, so the range is always reduced; on VNNI CPUs it costs one bit of
# weight precision.
REDUCE_RANGE = True


def calibration_images(folder: PathLike, max_images: int) -> list[Path]:
    """Up to ``max_images`` image files of ``folder`` (recursively), spread evenly over its sorted listing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder '{folder}' does not exist")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise ValueError(f"calibration folder '{folder}' holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if len(files) > max_images:
        files = [files[int(i)] for i in np.linspace(0, len(files) - 1, max_images)]
    return files


class _Reader:
    """``CalibrationDataReader``: one letterboxed, normalised image per ``get_next`` (the runtime's pre-processing)."""

    def __init__(self, metadata: dict[str, Any], input_names: list[str], files: list[Path]):
        self.metadata, self.input_names, self.files = metadata, input_names, files
        self.seen: set[Path] = set()
        self._iter: Iterator[Path] = iter(files)

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        from .runtime.detector import prepare_batch

        for path in self._iter:
            try:
                image = load_image(path)
            except ImageReadError:
                continue
            feed, _ = prepare_batch([image], self.metadata["image_size"], self.metadata["mean"], self.metadata["std"])
            self.seen.add(path)
            return {name: feed[name] for name in self.input_names}
        return None

    @property
    def used(self) -> int:
        """Distinct images fed (the calibrator may read the data more than once)."""
        return len(self.seen)

    def rewind(self) -> None:
        self._iter = iter(self.files)


def quantize_file(source: PathLike, target: PathLike, calibration: PathLike, max_images: int = 64,
                  quant_format: str = "QDQ", method: str = "MinMax",
                  float_convs: tuple[str, ...] = FLOAT_CONVS) -> dict[str, Any]:
    """Quantize the exported float32 file ``source`` to int8 at ``target`` (may be the same path),
    calibrated on up to ``max_images`` images of the folder ``calibration``. Metadata is kept (``"int8": true``).
    Convolutions whose node name contains one of ``float_convs`` stay float32.

    Returns ``{"format", "images", "float_convs"}`` (the last: how many convolutions stayed float32).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .export import METADATA_KEY, read_metadata

    meta = read_metadata(source)
    if meta.get("half"):
        raise ValueError(f"'{source}' is a float16 export; quantize a float32 export instead")
    graph = onnx.load(str(source), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    keep_float = [n.name for n in graph.node if n.op_type == "Conv" and any(p in n.name for p in float_convs)]
    reader = _Reader(meta, inputs, calibration_images(calibration, max_images))
    with tempfile.TemporaryDirectory(prefix="effdet-int8-") as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantized = Path(folder) / "int8.onnx"
        quantize_static(str(prepared), str(quantized), reader,
                        quant_format=QuantFormat.QDQ if quant_format == "QDQ" else QuantFormat.QOperator,
                        op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=keep_float, per_channel=True,
                        reduce_range=REDUCE_RANGE, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method))
        if reader.used == 0:
            raise ValueError(f"no readable image in calibration folder '{calibration}'")
        model = onnx.load(str(quantized))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(dict(meta, int8=True, quant_format=quant_format,
                                                           calibration_images=reader.used,
                                                           float_convs=len(keep_float)))
    onnx.save(model, str(target))
    return {"format": quant_format, "images": reader.used, "float_convs": len(keep_float)}
