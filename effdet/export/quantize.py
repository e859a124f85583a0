"""Int8 post-training static quantization of exported ONNX files, with one of two quantizers.

Both feed N images of the user's data through the same letterbox and normalisation as inference
(``effdet.runtime.OnnxDetector.preprocess``) to calibrate activation ranges, and both write an ONNX file in the QDQ
format that either runtime runs; they differ in where they put the quantize/dequantize pairs, which is what decides
the speed on each runtime:

- ``"nncf"`` (the default; OpenVINO's NNCF): NNCF's placement for OpenVINO's CPU plugin (performance preset, fast
  bias correction, activations per tensor), which also quantizes the inputs of the element-wise ops, pooling and
  resizes between convolutions so that OpenVINO runs whole blocks in int8. It keeps the demo model's AP on both
  runtimes and is the fastest int8 file on OpenVINO; onnxruntime runs it slower than float32 (it converts around
  those ops).
- ``"onnxruntime"`` (ONNX Runtime's ``quantize_static``): the network's convolutions only, weights per output
  channel (int8, symmetric, 7-bit range: see :data:`REDUCE_RANGE`), activations per tensor (uint8, MinMax). The
  faster int8 file on onnxruntime, which fuses each QDQ convolution into an integer kernel; it loses more AP.

Decoding, top-k and NMS of a detections-form graph stay float32 in both. The onnxruntime quantizer also keeps the
class/box prediction convolutions and the stem in float32 (:data:`FLOAT_CONVS`); NNCF quantizes their inputs and
weights too (their outputs stay float), which measured the same AP on the demo model (0.664 vs 0.665 with them
float) and 5% faster on OpenVINO.
"""
from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ..data.preprocess import ImageReadError, load_image
from ..types import PathLike

__all__ = ["quantize_file", "calibration_images", "QUANTIZERS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
QUANTIZED_OPS = ["Conv"]  # the network only: decode, top-k and NMS (Mul/Add/Sigmoid on boxes and scores) stay float
# Convolutions left in float32 (substrings of the exported node names): the class and box prediction convs, whose
# outputs are the logits and box codes themselves (a per-tensor uint8 range over all anchors' logits loses the
# small score differences that rank detections), and the stem, which sees the raw normalised image.
FLOAT_CONVS = ("/predict/", "/stem/")
# onnxruntime quantizer: weights in [-64, 64] instead of [-128, 127]. On x86 CPUs without VNNI (AVX2, most AVX-512),
# onnxruntime's uint8 x int8 kernels multiply-add pairs of products into int16 (vpmaddubsw), which saturates with
# full-range weights; the onnxruntime quantization docs recommend reduce_range there. Measured on the fully trained
# demo model (README, "Int8"): on an AVX2 machine AP 0.485 with full-range weights, 0.646 with the 7-bit range (fp32
# 0.644); on an AVX-512 VNNI machine 0.656 and 0.646 (fp32 0.661). A file is quantized once and may run on any CPU,
# so the range is always reduced. (The default quantizer, NNCF, kept the AP with full-range weights on both VNNI and
# AVX2-only OpenVINO kernels.)
REDUCE_RANGE = True
QUANTIZERS = ("nncf", "onnxruntime")  # the first is the default
NETWORK_SCOPE = "/model/"  # exported node names of the network; the rest is decode, top-k and NMS


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
        from ..runtime.detector import prepare_batch

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

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        """Every readable image once, from the start (NNCF's dataset reads the data more than once)."""
        self.rewind()
        return iter(self.get_next, None)


def quantize_file(source: PathLike, target: PathLike, calibration: PathLike, max_images: int = 64,
                  quantizer: str = "nncf", quant_format: str = "QDQ", method: str = "MinMax",
                  float_convs: Optional[tuple[str, ...]] = None) -> dict[str, Any]:
    """Quantize the exported float32 file ``source`` to int8 at ``target`` (may be the same path),
    calibrated on up to ``max_images`` images of the folder ``calibration``, with ``quantizer`` (one of
    :data:`QUANTIZERS`; see the module docstring). Metadata is kept (``"int8": true``, ``"quantizer"``).
    Convolutions whose node name contains one of ``float_convs`` stay float32 (default: :data:`FLOAT_CONVS` for the
    onnxruntime quantizer, none for NNCF). ``quant_format`` and ``method``
    (onnxruntime only): ``"QDQ"``/``"QOperator"`` and the calibration method (``"MinMax"``, ``"Entropy"``, ...).

    Returns ``{"quantizer", "format", "images", "float_convs"}`` (the last: how many convolutions stayed float32).
    """
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from .metadata import read_metadata
    from ..runtime.sessions import METADATA_KEY

    if quantizer not in QUANTIZERS:
        raise ValueError(f"unknown quantizer {quantizer!r}; valid: {list(QUANTIZERS)}")
    if quantizer == "nncf" and quant_format != "QDQ":
        raise ValueError("the nncf quantizer writes QDQ files only")
    if float_convs is None:
        float_convs = FLOAT_CONVS if quantizer == "onnxruntime" else ()
    meta = read_metadata(source)
    if meta.get("half"):
        raise ValueError(f"'{source}' is a float16 export; quantize a float32 export instead")
    graph = onnx.load(str(source), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    keep_float = [n.name for n in graph.node if n.op_type == "Conv" and any(p in n.name for p in float_convs)]
    reader = _Reader(meta, inputs, calibration_images(calibration, max_images))
    if next(iter(reader), None) is None:
        raise ValueError(f"no readable image in calibration folder '{calibration}'")
    reader.rewind()
    with tempfile.TemporaryDirectory(prefix="effdet-int8-") as folder:
        prepared = Path(folder) / "prepared.onnx"  # shapes inferred, constants folded (NNCF needs initializers)
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        if quantizer == "nncf":
            model = _quantize_nncf(onnx.load(str(prepared)), reader, keep_float)
        else:
            model = _quantize_onnxruntime(prepared, Path(folder) / "int8.onnx", reader, keep_float, quant_format,
                                          method)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(dict(meta, int8=True, quantizer=quantizer,
                                                           quant_format=quant_format, calibration_images=reader.used,
                                                           float_convs=len(keep_float)))
    onnx.save(model, str(target))
    return {"quantizer": quantizer, "format": quant_format, "images": reader.used, "float_convs": len(keep_float)}


def _quantize_onnxruntime(prepared: Path, quantized: Path, reader: _Reader, keep_float: list[str],
                          quant_format: str, method: str) -> Any:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(str(prepared), str(quantized), reader,
                    quant_format=QuantFormat.QDQ if quant_format == "QDQ" else QuantFormat.QOperator,
                    op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=keep_float, per_channel=True,
                    reduce_range=REDUCE_RANGE, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method))
    return onnx.load(str(quantized))


def _quantize_nncf(model: Any, reader: _Reader, keep_float: list[str]) -> Any:
    """NNCF's post-training quantization of the ONNX ``model`` (performance preset); the nodes outside the network
    (decode, top-k, NMS) and ``keep_float`` stay float32."""
    try:
        import nncf
    except ImportError:
        raise ImportError("the nncf quantizer needs NNCF: pip install nncf (it comes with "
                          "`pip install \"effdet-lightning[export]\"`), or use --quantizer onnxruntime") from None
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters

    nncf.set_log_level(logging.WARNING)  # not one INFO line per node
    outside = [n.name for n in model.graph.node if not n.name.startswith(NETWORK_SCOPE)]
    # Activations per tensor: NNCF would quantize depthwise inputs per channel, which OpenVINO runs but
    # onnxruntime's QLinearConv refuses ("input zero point must be a scalar").
    per_tensor = AdvancedQuantizationParameters(
        activations_quantization_params=QuantizationParameters(per_channel=False))
    return nncf.quantize(model, nncf.Dataset(reader), preset=nncf.QuantizationPreset.PERFORMANCE,
                         subset_size=len(reader.files), advanced_parameters=per_tensor,
                         ignored_scope=nncf.IgnoredScope(names=outside + keep_float, validate=False))
