"""Detecting with a trained model: the ``Predictor`` (:mod:`.predictor`), annotated outputs of ``infer``
(:mod:`.annotate`) and the torch side that runs an exported file for the Predictor (:mod:`.runtime_network`). What
training shares with it lives below both: pre-processing in :mod:`effdet.data.preprocess`, drawing boxes in
:mod:`effdet.data.visualize`, the post-processing settings in :mod:`effdet.modeling.postprocess_settings` (its
``PostprocessSettings`` is offered here too), decoding the network's outputs in :mod:`effdet.modeling.decode`.
Nothing under training (``effdet.engine``, ``effdet.modeling``, ``effdet.data``, ``effdet.ops``) imports this package.

Importing this package is cheap: the names below are loaded from their modules on first use. ``effdet.inference`` was a module before (issue 22); its names that moved to
:mod:`effdet.modeling` still come from here, with a DeprecationWarning.
"""
from __future__ import annotations

from .._moved import lazy_exports

_EXPORTS = {
    "PostprocessSettings": "..modeling.postprocess_settings", "Predictor": ".predictor", "load_predictor": ".predictor",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)  # and the old module's names that moved (effdet._moved)
