"""Helper for tests/e2e/test_distributed.py (run as a script, never imported by pytest): a real Lightning fit with
the run's own data module, module and Trainer (``effdet.engine.runner.build_trainer``), plus a callback that saves
what every rank holds, so a test can compare ranks with each other and with a one-process run.

    python tests/helpers/ddp_fit.py OUT_DIR CONFIG.yaml [key=value ...]

Writes ``OUT_DIR/rank{r}.pt``: ``{"start": weights before the first step, "end": weights after the fit,
"ema_updates": EMA updates done, "global_step": optimiser steps, "lr": learning rate of the first step,
"nonfinite_steps": skipped steps}``.
With ``EFFDET_TEST_NAN_STEP=k`` the loss of global rank 1 (rank 0 with one process) is NaN at step k,
to check that every rank skips that step together. With ``EFFDET_TEST_RECORD_MASKS=1`` the record also holds
``"masks"``: per training forward, ``(global_step, which samples each drop-path module kept)``.
A run directory that already holds ``checkpoints/last.ckpt`` resumes from it, as ``tools/train.py`` does.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
import torch  # noqa: E402

from effdet.engine.schema import load_train_config, resolve_model_config  # noqa: E402
from effdet.engine.runner import build_trainer, prepare_output_dir  # noqa: E402
from effdet.engine.datamodule import DetectionDataModule  # noqa: E402
from effdet.engine.module import DetectionModule  # noqa: E402


def _weights(module: DetectionModule) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.model.state_dict().items()}


class RecordRanks(L.Callback):
    def __init__(self, out: Path):
        self.out = out
        self.record: dict = {}

    def on_train_start(self, trainer, module):
        self.record["start"] = _weights(module)  # after DDP's broadcast from rank 0

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.record.setdefault("lr", trainer.optimizers[0].param_groups[0]["lr"])

    def on_train_end(self, trainer, module):
        self.record.update(end=_weights(module), global_step=trainer.global_step,
                           ema_updates=int(module.ema.n_averaged) if module.ema is not None else 0,
                           nonfinite_steps=module.nonfinite_steps, world_size=trainer.world_size)
        torch.save(self.record, self.out / f"rank{trainer.global_rank}.pt")


def record_drop_path_masks(module: DetectionModule, record: dict) -> None:
    """Forward hooks on every drop-path module: which samples of the batch kept their residual branch."""
    from backbones.layers import DropPath

    masks = record.setdefault("masks", [])
    current: list = []

    def hook(layer, inputs, output):
        if layer.training:
            current.append((output.detach().flatten(1) != 0).any(1).cpu())

    def forward_pre(_module, _inputs):
        current.clear()

    def forward_post(_module, _inputs, _output):
        if module.model.training and current:
            masks.append((module.trainer.global_step, torch.stack(current)))

    layers = [m for m in module.model.modules() if isinstance(m, DropPath)]
    assert layers, "no drop-path module: set model.drop_path_rate > 0"
    for layer in layers:
        layer.register_forward_hook(hook)
    module.model.register_forward_pre_hook(forward_pre)
    module.model.register_forward_hook(forward_post)


def inject_nan(module: DetectionModule, step: int) -> None:
    forward = module.criterion.forward

    def maybe_nan(*args, **kwargs):
        losses = forward(*args, **kwargs)
        trainer = module.trainer
        if trainer.global_step == step and trainer.global_rank == min(1, trainer.world_size - 1):
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    module.criterion.forward = maybe_nan


def main(out: str, config: str, *overrides: str) -> None:
    out_dir = Path(out)
    cfg = load_train_config(config, [*overrides, f"output_dir={out_dir}"])
    L.seed_everything(cfg.seed, workers=True)
    provisional = resolve_model_config(cfg.model, num_classes=1)
    datamodule = DetectionDataModule(cfg.data, provisional.image_size, provisional.mean, seed=cfg.seed)
    module = DetectionModule(cfg, datamodule.class_names, datamodule.category_ids)
    if os.environ.get("EFFDET_TEST_NAN_STEP"):
        inject_nan(module, int(os.environ["EFFDET_TEST_NAN_STEP"]))
    recorder = RecordRanks(out_dir)
    if os.environ.get("EFFDET_TEST_RECORD_MASKS"):
        record_drop_path_masks(module, recorder.record)
    resume_from = prepare_output_dir(cfg)
    trainer = build_trainer(cfg, out_dir)
    trainer.callbacks.append(recorder)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)


if __name__ == "__main__":
    main(*sys.argv[1:])
