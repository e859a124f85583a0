"""Detecting with a trained model: pre-processing (:mod:`.preprocess`), post-processing settings
(:mod:`.settings`), the ``Predictor`` (:mod:`.predictor`), annotated outputs of ``infer`` (:mod:`.annotate`,
:mod:`.visualize`) and the torch side that runs an exported file for the Predictor (:mod:`.runtime_network`).
Decoding the network's outputs is the model's (:mod:`effdet.modeling.decode`).

Importing this package is cheap (the torch-free runtime imports :mod:`.preprocess`): the names below are loaded
from their modules on first use. ``effdet.inference`` was a module before (issue 22); its names that moved to
:mod:`effdet.modeling` still come from here, with a DeprecationWarning.
"""
from __future__ import annotations

from .._moved import lazy_exports

_EXPORTS = {
    "PostprocessSettings": ".settings", "Predictor": ".predictor", "load_predictor": ".predictor",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)  # and the old module's names that moved (effdet._moved)
