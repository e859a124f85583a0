"""EfficientDet: compound-scaled EfficientNet + BiFPN detectors (D0–D7x, Lite0–4), trained with Lightning.

The package namespace is lazy (PEP 562): ``effdet.create_model``, ``effdet.Predictor`` … and every submodule are
imported on first use. So ``import effdet`` loads neither OpenCV nor Lightning, and ``effdet.runtime`` (the
torch-free ONNX runtime) can be imported on a machine without PyTorch.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> the module of effdet that defines it
_EXPORTS = {
    "EfficientDet": "model",
    "ModelConfig": "variants",
    "model_config": "variants",
    "create_model": "factory",
    "list_models": "factory",
    "load_weights": "checkpoint",
    "Predictor": "predictor",
    "Classifier": "classifier",
    "classify": "classifier",
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
