"""EfficientDet: compound-scaled EfficientNet + BiFPN detectors (D0–D7x, Lite0–4), trained with Lightning.

The package namespace is lazy (PEP 562): ``effdet.create_model``, ``effdet.Predictor`` … and every submodule are
imported on first use. So ``import effdet`` loads neither OpenCV nor Lightning, and ``effdet.runtime`` (the
torch-free ONNX runtime) can be imported on a machine without PyTorch.

Rooms, one job each: ``modeling`` (the network, anchors, matcher, loss, decode and its settings), ``ops`` (box maths,
NMS), ``engine`` (config schema, training), ``evaluation`` (COCO evaluation, analysis), ``inference`` (the Predictor),
``export`` (ONNX, int8), ``runtime`` (torch-free), ``checkpoint``, ``data`` (datasets, transforms, the shared
pre-processing), ``cli``.
The module paths from before (``effdet.loss``, ``effdet.training`` …) still import, with a DeprecationWarning
(:mod:`effdet._moved`).
"""
from __future__ import annotations

import importlib
from typing import Any

from . import _moved

_moved.install()  # old module paths (effdet.loss, effdet.training …) answer with the new modules, and warn

# public name -> the module of effdet that defines it
_EXPORTS = {
    "EfficientDet": "modeling.model",
    "ModelConfig": "modeling.variants",
    "model_config": "modeling.variants",
    "create_model": "modeling.factory",
    "list_models": "modeling.factory",
    "load_weights": "checkpoint",
    "Predictor": "inference.predictor",
    "Classifier": "modeling.classifier",
    "classify": "modeling.classifier",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
