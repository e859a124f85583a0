"""The detector and what defines its outputs: the variant table and the φ rule (:mod:`.variants`), BiFPN
(:mod:`.bifpn`), ``EfficientDet`` (:mod:`.model`), anchors (:mod:`.anchors`), the matcher (:mod:`.assign`), the loss
(:mod:`.loss`), decoding of the outputs into detections (:mod:`.decode`) and its settings (:mod:`.postprocess_settings`,
torch-free), the layer factories resolved from the config (:mod:`.layers`), ``create_model`` (:mod:`.factory`),
compound scaling at any φ (:mod:`.scaling`) and the EfficientNet-Lite classifier (:mod:`.classifier`). Nothing here
imports training (:mod:`effdet.engine`) or inference (:mod:`effdet.inference`).

Importing this package is cheap: the names below are loaded from their modules on first use.
"""
from __future__ import annotations

from .._moved import lazy_exports

_EXPORTS = {
    "EfficientDet": ".model", "ModelConfig": ".variants", "model_config": ".variants", "list_models": ".factory",
    "create_model": ".factory", "Classifier": ".classifier", "classify": ".classifier",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
