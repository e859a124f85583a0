"""Checkpoints for tests, written with the package's own writers (effdet.checkpoint.fields / io), so a change of
our checkpoint format cannot pass the fast tests while breaking what training writes."""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import torch.nn as nn

from effdet.checkpoint.fields import LIGHTNING_EMA_PREFIX, LIGHTNING_MODEL_PREFIX, lightning_checkpoint_fields
from effdet.checkpoint.io import write_checkpoint


def write_training_checkpoint(path, model: nn.Module, class_names: Optional[Sequence[str]],
                              category_ids: Optional[Sequence[int]], *, ema: Optional[nn.Module] = None,
                              train_config: Optional[Mapping[str, Any]] = None, **extra: Any):
    """What ``DetectionModule`` saves: the LightningModule's state dict (the detector under ``model.``, an
    ``AveragedModel`` named ``ema`` under ``ema.module.`` plus its ``n_averaged``) and the entries of
    :func:`effdet.checkpoint.fields.lightning_checkpoint_fields`."""
    import torch

    state = {LIGHTNING_MODEL_PREFIX + k: v for k, v in model.state_dict().items()}
    if ema is not None:
        state.update({LIGHTNING_EMA_PREFIX + k: v for k, v in ema.state_dict().items()})
        state["ema.n_averaged"] = torch.tensor(7)
    payload = dict(extra, state_dict=state)
    payload.update(lightning_checkpoint_fields(model.config, class_names, category_ids, train_config=train_config))
    return write_checkpoint(path, payload)
