"""EfficientDet: compound-scaled EfficientNet + BiFPN detectors (D0–D7x, Lite0–4), trained with Lightning.

``import effdet`` loads the model code only (no OpenCV, no Lightning); the Predictor is loaded on first use.
"""
from __future__ import annotations

from typing import Any

from .checkpoint import load_weights
from .variants import ModelConfig, model_config
from .factory import create_model, list_models
from .model import EfficientDet

__all__ = ["Classifier", "EfficientDet", "ModelConfig", "Predictor", "classify", "create_model", "list_models", "load_weights",
           "model_config"]


def __getattr__(name: str) -> Any:
    if name == "Predictor":  # needs image pre-processing (OpenCV): imported when asked for
        from .predictor import Predictor

        return Predictor
    if name in ("Classifier", "classify"):  # ImageNet classification with the backbones (OpenCV too)
        from . import classifier

        return getattr(classifier, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
