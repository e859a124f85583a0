"""EfficientDet: compound-scaled EfficientNet + BiFPN detectors (D0–D7x, Lite0–4), trained with Lightning."""
from .config import ModelConfig, list_models, model_config
from .model import EfficientDet, create_model

__all__ = ["EfficientDet", "ModelConfig", "create_model", "list_models", "model_config"]
from .weights import load_weights
__all__ += ["load_weights"]
from .predictor import Predictor  # noqa: E402
__all__ += ["Predictor"]
from .classifier import Classifier, classify  # noqa: E402
__all__ += ["Classifier", "classify"]
