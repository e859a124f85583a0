"""One training run: output directory, resume, Lightning Trainer set-up, final metrics and curves.

Run directory layout (``output_dir``)::

    config.yaml              the resolved config of the run
    checkpoints/last.ckpt    the true last step, written atomically at the end of every epoch (validated or
                             not), every ``checkpoint.every_n_steps`` optimiser steps, at the end of training
                             and on SIGTERM (the resume point; mid-epoch resumes are exact)
    checkpoints/best.ckpt    best val/AP so far
    logs/metrics.csv         Lightning CSV log (TensorBoard event files in tb/ when installed)
    metrics.json             final COCO stats (0..1) + per-class AP of best.ckpt
    curves.png               losses, learning rate and val AP (when matplotlib is installed)
"""
from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from ..choices import AUTO, SYNC_BATCHNORM_BELOW
from ..evaluation.report import STAT_KEYS, format_coco_summary, format_per_class_table, save_metrics
from ..fileio import atomic_path
from .datamodule import DetectionDataModule
from .module import DetectionModule, compile_report

logger = logging.getLogger("effdet.runner")


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, then renames it into place, so a
    process killed mid-write leaves the previous checkpoint intact."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


# Exit status of a run stopped by SIGTERM after saving last.ckpt (128 + SIGTERM, the shell's convention): the
# caller can tell an interrupted run from a finished one; the same command resumes it.
SIGTERM_EXIT_CODE = 143


class LastCheckpoint(Checkpoint):
    """Owns ``last.ckpt``, the resume point: it always holds the run's true last step.

    Written (collectively, atomically through :class:`AtomicCheckpointIO`)
    - at the end of every training epoch, validated or not (after that epoch's validation, so the best-AP
      bookkeeping and the data position are current);
    - right after every ``every_n_steps``-th optimiser step when ``every_n_steps > 0`` (mid-epoch resumes are
      exact: Lightning saves the loop state and the data module's position with it);
    - at the end of training, when it stopped between those points: ``trainer.max_steps`` saves right after
      that step, with the mid-epoch loop state (a larger ``max_steps`` then continues inside the epoch);
    - on SIGTERM, at the training-batch boundary where every rank stops together (:class:`SigtermAgreement`).

    A ``Checkpoint`` subclass, so Lightning calls its epoch-end hook after the epoch is counted as processed, as
    for ``ModelCheckpoint``: a resume from it starts the next epoch, and a finished run resumed trains nothing.
    """

    def __init__(self, path: Path, every_n_steps: int = 0):
        self.path = Path(path)
        self.every_n_steps = int(every_n_steps)
        self._saved_step = -1  # global step of the last mid-epoch save (an epoch end always saves)

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole state (Lightning 2.6 logs a default)
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # counts optimiser steps: unchanged by micro-batches under accumulation
        periodic = self.every_n_steps > 0 and step % self.every_n_steps == 0
        last_step = 0 < trainer.max_steps <= step  # saved here, with the mid-epoch loop state: a run resumed with
        # a larger trainer.max_steps continues inside this epoch instead of skipping the rest of it
        if step > 0 and step != self._saved_step and (periodic or last_step):
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        cut_short = trainer.fit_loop.epoch_loop.batch_progress.current.processed < trainer.num_training_batches
        if not trainer.sanity_checking and not cut_short:
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self._saved_step:
            self._save(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            self._save(trainer)
            logger.warning("SIGTERM: saved %s at epoch %d, global step %d; run the same command to resume",
                           self.path, trainer.current_epoch, trainer.global_step)


class SigtermAgreement(Callback):
    """Every rank stops for SIGTERM at the same training step, so that the collective ``last.ckpt`` save that
    follows (:class:`LastCheckpoint`) finds all of them.

    Lightning's own handling is not safe with several processes: its handler runs a ``broadcast`` inside the signal
    handler (a collective at an arbitrary point of a rank's step, out of order with DDP's), and each rank checks
    its own flag at the end of a batch, so a rank that got the signal one step later than another waits forever
    in the next step's collectives (seen here: 2 gloo ranks hung after SIGTERM). This callback replaces the
    handler, while training runs, by one that only forwards the signal to the launcher's child processes (as
    Lightning does) and notes it; after each training batch the ranks agree with one ``all_reduce`` whether any
    of them got it, and only then Lightning's flag is set, on every rank, before the batch-end check that raises
    ``SIGTERMException``. Lightning restores the previous handlers when the fit ends.
    """

    def __init__(self) -> None:
        self._pending = False
        self._agreed = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; Lightning's stay
        connector = trainer._signal_connector  # Lightning's own flag, read at the end of every training batch

        def noted(signum, frame) -> None:
            if not self._pending:
                logger.info("SIGTERM received (rank %d): stopping with every rank after this training step",
                            trainer.global_rank)
                launcher = trainer.strategy.launcher
                if launcher is not None:
                    launcher.kill(signum)  # the child processes Lightning started (as its own handler does)
            self._pending = True
            connector.received_sigterm = self._agreed

        connector.received_sigterm = False
        signal.signal(signal.SIGTERM, noted)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        import torch.distributed as dist

        stop = self._pending
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            flag = torch.tensor([1.0 if stop else 0.0], device=trainer.strategy.root_device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            stop = bool(flag.item())
        if stop:
            self._agreed = True
            trainer._signal_connector.received_sigterm = True


def _is_global_zero() -> bool:
    """Rank 0 of the whole job, from the launcher's variables (before Lightning sets up processes): torchrun's
    RANK, SLURM's SLURM_PROCID, else NODE_RANK and LOCAL_RANK (Lightning's own multi-node launch)."""
    env = os.environ
    for key in ("RANK", "SLURM_PROCID"):
        if key in env:
            return int(env[key]) == 0
    return int(env.get("NODE_RANK", env.get("GROUP_RANK", "0"))) == 0 and int(env.get("LOCAL_RANK", "0")) == 0


def describe_checkpoint(path: Path) -> str:
    """``epoch E, global step S`` of a Lightning checkpoint (memory-mapped: the weights are not read)."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return f"epoch {ckpt['epoch']}, global step {ckpt['global_step']}"
    except Exception as error:  # the Trainer reports unreadable checkpoints itself
        return f"unreadable ({error})"


def prepare_output_dir(cfg: DictConfig) -> Optional[str]:
    """Create ``output_dir``; return the checkpoint to resume from (``last.ckpt``) or None.

    With ``resume=false`` an existing run is not deleted: its files move to ``previous-<time>/``.
    """
    out = Path(cfg.output_dir)
    last = out / "checkpoints" / "last.ckpt"
    if last.exists() and cfg.resume:
        logger.info("resuming from %s at %s (set resume=false to start fresh)", last, describe_checkpoint(last))
        return str(last)
    if not cfg.resume and out.exists() and any(out.iterdir()) and _is_global_zero():
        keep = out / time.strftime("previous-%Y%m%d-%H%M%S")
        keep.mkdir()
        for item in out.iterdir():
            if item != keep and not item.name.startswith("previous-"):
                shutil.move(str(item), str(keep / item.name))
        logger.info("resume=false: moved the existing run in %s to %s", out, keep)
    out.mkdir(parents=True, exist_ok=True)
    return None


def _loggers(out: Path) -> list:
    loggers: list = [CSVLogger(save_dir=str(out), name="logs", version="")]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        import tensorboard  # noqa: F401

        loggers.append(TensorBoardLogger(save_dir=str(out), name="tb", version=""))
    except ImportError:
        pass
    return loggers


def build_trainer(cfg: DictConfig, out: Path, **extra: Any) -> L.Trainer:
    """A Lightning Trainer from ``cfg.trainer`` plus the run's callbacks, loggers and atomic checkpoints."""
    best = ModelCheckpoint(
        dirpath=str(out / "checkpoints"), filename="best", monitor="val/AP", mode="max", save_top_k=1,
        save_last=False, auto_insert_metric_name=False, enable_version_counter=False)
    last = LastCheckpoint(out / "checkpoints" / "last.ckpt", every_n_steps=int(cfg.checkpoint.every_n_steps))
    resolve_trainer_settings(cfg)  # (already done by train(); for callers that build a Trainer themselves)
    callbacks: list[Callback] = [SigtermAgreement(), best, last]
    kwargs: dict[str, Any] = dict(
        default_root_dir=str(out), callbacks=callbacks, logger=_loggers(out), plugins=[AtomicCheckpointIO()],
        gradient_clip_val=cfg.optim.grad_clip, check_val_every_n_epoch=cfg.eval.every_n_epochs,
        num_sanity_val_steps=0, log_every_n_steps=10)
    kwargs.update(OmegaConf.to_container(cfg.trainer, resolve=True))
    kwargs.update(extra)
    return L.Trainer(**kwargs)


def check_anchors(cfg: DictConfig, datamodule: DetectionDataModule, model_config: Any) -> None:
    """The start-up anchor check (``data.anchor_fit``, :func:`effdet.engine.anchor_fit.startup_check`): logs how well
    the anchors can match the training boxes; with ``apply`` writes the suggested anchors into ``cfg.model``
    (so config.yaml and the checkpoints carry them). Every process computes the same result from the same data."""
    from .anchor_fit import startup_check

    text, overrides = startup_check(datamodule.training_annotations(), model_config, cfg.loss.match_threshold,
                                    cfg.data.anchor_fit, seed=cfg.seed)
    if text and _is_global_zero():
        for line in text.splitlines():
            if line.startswith("warning: "):
                logger.warning(line[len("warning: "):])
            else:
                logger.info(line)
    for key, value in overrides.items():
        cfg.model[key] = value


def prepare_data(cfg: DictConfig) -> DetectionDataModule:
    """The run's data, first: both annotation files are validated before a Trainer or a model is built; then the
    start-up anchor check (which may set ``cfg.model`` anchors). That check is the last reader of the training set's
    COCO index, so it is dropped: each loader worker of each rank gets the dataset without it."""
    from .schema import resolve_model_config

    provisional = resolve_model_config(cfg.model, num_classes=1)
    datamodule = DetectionDataModule(cfg.data, provisional.image_size, provisional.mean, seed=cfg.seed,
                                     source_val=cfg.eval.get("slice_size") is not None)  # sliced validation
    check_anchors(cfg, datamodule, provisional)
    datamodule.drop_annotation_index()
    return datamodule


def resolve_precision(precision: Any, accelerator: Any = "auto") -> tuple[str, str]:
    """``(precision, why)``: ``trainer.precision`` as Lightning takes it. ``auto`` becomes bf16-mixed where the
    accelerator supports it, else 16-mixed on CUDA, else 32-true (the CPU, where autocast's speed depends on the
    CPU's bf16 units: ask for bf16-mixed explicitly there)."""
    if str(precision) != AUTO:
        return str(precision), "as configured"
    cuda = str(accelerator) in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    if cuda and torch.cuda.is_bf16_supported():
        return "bf16-mixed", f"{torch.cuda.get_device_name()} supports bfloat16"
    if cuda:
        return "16-mixed", f"{torch.cuda.get_device_name()} has no bfloat16 support"
    return "32-true", "no CUDA accelerator"


def resolve_trainer_settings(cfg: DictConfig) -> None:
    """Resolve our ``auto`` values of ``trainer.precision`` and ``trainer.sync_batchnorm`` in ``cfg`` (so config.yaml
    and the checkpoints say what ran) and log what they became. ``sync_batchnorm: auto`` is on when the per-device
    batch is below :data:`~effdet.choices.SYNC_BATCHNORM_BELOW`: smaller batches give noisy batch statistics, larger
    ones are not worth a synchronisation per batch-norm layer."""
    trainer = cfg.trainer
    if trainer.get("precision") is not None and str(trainer.precision) == AUTO:
        trainer.precision, why = resolve_precision(AUTO, trainer.get("accelerator", "auto"))
        logger.info("trainer.precision=auto resolved to %s (%s)", trainer.precision, why)
    if str(trainer.get("sync_batchnorm")) == AUTO:
        trainer.sync_batchnorm = int(cfg.data.batch_size) < SYNC_BATCHNORM_BELOW
        logger.info("trainer.sync_batchnorm=auto resolved to %s (data.batch_size %d per device, rule: on below %d)",
                    trainer.sync_batchnorm, cfg.data.batch_size, SYNC_BATCHNORM_BELOW)


def train(cfg: DictConfig, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train as configured, with ``callbacks`` added to the run's own (diagnostics: benchmarks/ema_windows.py);
    returns the final metrics (also written to ``output_dir/metrics.json``)."""
    L.seed_everything(cfg.seed, workers=True)
    resolve_trainer_settings(cfg)
    out = Path(cfg.output_dir)
    datamodule = prepare_data(cfg)
    resume_from = prepare_output_dir(cfg)
    if _is_global_zero():
        with atomic_path(out / "config.yaml") as tmp:
            OmegaConf.save(cfg, tmp, resolve=True)
    module = DetectionModule(cfg, datamodule.class_names, datamodule.category_ids)
    trainer = build_trainer(cfg, out)
    trainer.callbacks.extend(callbacks)
    # Lightning warns that a mid-epoch resume needs a stateful loader; ours resumes through the data module's
    # state instead (DetectionDataModule.state_dict, effdet.data.resumable), which that check does not see.
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from)
    except SIGTERMException:
        raise SystemExit(SIGTERM_EXIT_CODE) from None  # last.ckpt is saved (LastCheckpoint)
    if cfg.get("compile"):
        logger.info(compile_report())
    return finalize(cfg, trainer, module, datamodule)


def finalize(cfg: DictConfig, trainer: L.Trainer, module: DetectionModule, datamodule: DetectionDataModule) -> dict:
    """Validate ``best.ckpt`` (or the final weights), write ``metrics.json`` and ``curves.png``, print tables."""
    out = Path(cfg.output_dir)
    best = out / "checkpoints" / "best.ckpt"
    ckpt_path = str(best) if best.exists() else None
    module.last_metrics = {}
    trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    if not module.last_metrics:
        # A strategy that starts its own processes (ddp_spawn) validated there: score again in this process.
        trainer = build_trainer(cfg, out, devices=1, num_nodes=1, strategy="auto", logger=False, callbacks=[])
        trainer.validate(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    metrics = dict(module.last_metrics)
    result = {key: metrics[key] for key in STAT_KEYS}
    result["per_class"] = metrics.get("per_class", {})
    result["max_dets"] = metrics.get("max_dets", 100)  # detections per image scored: max(100, eval.max_detections)
    if module.nonfinite_steps:
        result["skipped_nonfinite_steps"] = module.nonfinite_steps
    evaluator = getattr(module, "last_evaluator", None)
    merged = evaluator._gather() if cfg.eval.get("plots") and evaluator is not None else None  # every rank
    if trainer.is_global_zero:
        save_metrics(out / "metrics.json", result, extra={"checkpoint": ckpt_path, "epoch": trainer.current_epoch})
        plot_curves(out)
        if merged is not None:
            write_error_analysis(out, merged, datamodule, module, int(cfg.eval.get("gallery", 8)))
        print(f"\nValidation of {ckpt_path or 'the final weights'} ({len(datamodule.val_set)} images):")
        print(format_coco_summary(result))
        print(format_per_class_table(result["per_class"]))
        print(f"\nrun directory: {out}  (metrics.json, checkpoints/, logs/)")
    return result


def write_error_analysis(out: Path, results_by_image: dict, datamodule: DetectionDataModule, module: DetectionModule,
                         gallery: int) -> None:
    """Error analysis of the final validation next to metrics.json (``eval.plots``; see effdet/evaluation/analysis/__init__.py)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.info("matplotlib not installed: no error analysis plots (pip install matplotlib)")
        return
    from ..evaluation.analysis import analyze

    results = [r for image_id in sorted(results_by_image) for r in results_by_image[image_id]]
    names = dict(zip(module.category_ids, module.class_names))
    analyze(datamodule.val_set.ground_truth, results, out, images_dir=datamodule.val_set.images_dir,
            class_names=names, gallery=gallery, exif_orientation=datamodule.val_set.exif_orientation,
            allow_outside_images=datamodule.val_set.allow_outside_images,
            max_dets=module.postprocess_settings.max_detections)


def plot_curves(out: Path) -> Optional[Path]:
    """``curves.png`` from ``logs/metrics.csv``: train losses and lr per step, val AP/AP50 per epoch."""
    csv_path = out / "logs" / "metrics.csv"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib not installed: no curves.png (pip install matplotlib)")
        return None
    if not csv_path.exists():
        return None
    import csv

    with open(csv_path, newline="") as handle:
        rows = list(csv.DictReader(handle))

    def series(key: str, x_key: str = "step") -> tuple[list[float], list[float]]:
        xs, ys = [], []
        for row in rows:
            if row.get(key) not in (None, "") and row.get(x_key) not in (None, ""):
                xs.append(float(row[x_key]))
                ys.append(float(row[key]))
        return xs, ys

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key in ("train/loss", "train/class_loss", "train/box_loss"):
        axes[0].plot(*series(key), label=key)
    axes[0].set_xlabel("step")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[1].plot(*series("train/lr"), label="learning rate")
    axes[1].set_xlabel("step")
    axes[1].legend()
    for key in ("val/AP", "val/AP50"):
        axes[2].plot(*series(key, "epoch"), marker="o", label=key)
    axes[2].set_xlabel("epoch")
    axes[2].legend()
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
