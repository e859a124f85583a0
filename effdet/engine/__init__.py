"""Training: the config schema (:mod:`.schema`), the Lightning modules (:mod:`.training`), the run directory,
resume and metrics (:mod:`.runner`) and the anchor check before a run (:mod:`.anchor_fit`).

Importing this package is cheap (no Lightning): the names below are loaded from their modules on first use.
"""
from __future__ import annotations

from .._moved import lazy_exports

_EXPORTS = {
    "DetectionModule": ".training", "DetectionDataModule": ".training", "ConfigError": ".schema",
    "load_train_config": ".schema", "train": ".runner",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
