"""Training: the config schema (:mod:`.schema`), the Lightning module (:mod:`.module`) and data module
(:mod:`.datamodule`), the EMA weights and batch-norm snapshot (:mod:`.ema`), LR schedules (:mod:`.schedules`), random
state (:mod:`.rng`), the run directory, resume and metrics (:mod:`.runner`), the anchor check before a run
(:mod:`.anchor_fit`), the host-sync counter of the training step (:mod:`.host_syncs`) and the α·β·γ search that trains
the candidates of the compound rule (:mod:`.scaling_search`; the rule is :mod:`effdet.modeling.scaling`). Training
never imports inference (:mod:`effdet.inference`).

Importing this package is cheap (no Lightning): the names below are loaded from their modules on first use.
``effdet.training``, the module these came from, is this package now (:mod:`effdet._moved`): its names are here.
"""
from __future__ import annotations

from .._moved import lazy_exports

_EXPORTS = {
    "DetectionModule": ".module", "MAX_CONSECUTIVE_NONFINITE": ".module",
    "DetectionDataModule": ".datamodule", "CocoDataModule": ".datamodule",  # CocoDataModule: deprecated, warns
    "ExponentialMovingAverage": ".ema", "BatchNormSnapshot": ".ema", "WarmupCosine": ".schedules",
    "seed_generators": ".rng", "rng_state": ".rng", "set_rng_state": ".rng", "gather_rng_states": ".rng",
    "ConfigError": ".schema", "load_train_config": ".schema", "train": ".runner",
}
__all__ = sorted(name for name in _EXPORTS if name != "CocoDataModule")
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
