"""The Lightning module of training: loss, EMA, optimiser, schedule, COCO validation, checkpoint entries.

The data module is :mod:`.datamodule`, the EMA :mod:`.ema`, the LR schedule :mod:`.schedules`, the random state
:mod:`.rng`.

Lightning owns the loop, DDP, mixed precision, gradient clipping, checkpoints, progress bar and loggers;
this module only says what one training step and one validation pass are.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Optional

import lightning as L
import torch
import torch.nn as nn
from omegaconf import OmegaConf
from lightning.pytorch.trainer.states import TrainerFn

from ..checkpoint.fields import lightning_checkpoint_fields
from ..evaluation.report import STAT_KEYS, CocoEvaluator
from ..data.preprocess import fill_from_mean, letterbox_batch, normalize
from ..modeling.postprocess_settings import PostprocessSettings
from ..ops.slicing import detect_images
from ..modeling.anchors import anchors_for
from ..modeling.assign import AnchorMatcher
from ..modeling.decode import detect_batch
from ..modeling.factory import create_model
from ..modeling.loss import DetectionLoss
from ..modeling.model import EfficientDet
from .ema import BatchNormSnapshot, ExponentialMovingAverage
from .rng import gather_rng_states, seed_generators, set_rng_state
from .schedules import WarmupCosine
from .schema import ConfigError, model_overrides, resolve_model_config

__all__ = ["MAX_CONSECUTIVE_NONFINITE", "DetectionModule"]

logger = logging.getLogger("effdet.training")

# Stop after this many consecutive steps with a non-finite loss (each one is skipped and reported).
MAX_CONSECUTIVE_NONFINITE = 10


# --------------------------------------------------------------------------------------------- module


def compile_network(model: nn.Module) -> nn.Module:
    """``torch.compile`` ``model`` in place (``nn.Module.compile``: the module keeps its parameters and state-dict
    keys, so checkpoints, the EMA update and export see the plain module) and return it. The first step compiles
    (on a CPU, minutes for forward + backward); a smaller last batch compiles once more, with a dynamic batch size."""
    model.compile()
    return model


def compile_report() -> str:
    """What ``torch.compile`` did in this process so far: graphs compiled and graph breaks (torch's own counters)."""
    from torch._dynamo.utils import counters

    breaks = sum(counters["graph_break"].values())
    reasons = "; ".join(sorted(counters["graph_break"]))[:500]
    return (f"torch.compile: {counters['stats']['unique_graphs']} graphs compiled, {breaks} graph breaks"
            + (f" ({reasons})" if breaks else ""))


class DetectionModule(L.LightningModule):
    """EfficientDet training: focal + huber loss on matched anchors, SGD/AdamW with warm-up + cosine,
    EMA weights for validation (and in checkpoints), COCO mAP validation logged as ``val/AP`` …

    Args:
        cfg: the whole resolved training config (OmegaConf or plain dict).
        class_names, category_ids: the dataset's label space (label i ↔ category id ``category_ids[i]``).
        val_coco: pycocotools COCO of the validation set (not saved; validation needs it).
    """

    def __init__(self, cfg: Any, class_names: list[str], category_ids: list[int], val_coco: Any = None):
        super().__init__()
        self.cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg)
        self.class_names = list(class_names)
        self.category_ids = [int(i) for i in category_ids]
        self.model_config = resolve_model_config(self.cfg.model, num_classes=len(self.class_names))
        if self.model_config.num_classes != len(self.class_names):
            raise ConfigError(f"model.num_classes={self.model_config.num_classes} but the dataset has "
                              f"{len(self.class_names)} categories {self.class_names}; remove model.num_classes")
        self.model = self._build_model()
        if self.cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        if self.cfg.optim.freeze_bn:  # statistics stay (see train()) and affine parameters are not optimised
            for m in self._batch_norms():
                m.requires_grad_(False)
        decay = self.cfg.optim.ema_decay
        # Averaged, never trained: no gradients, so DDP (which wraps this whole module) does not wait for them.
        # Its weights are saved with the module's as `ema.module.*`.
        self.ema = ExponentialMovingAverage(self.model, decay, self.cfg.optim.ema_warmup) if decay else None
        if self.cfg.get("compile", False):
            compile_network(self.model)  # the EMA copy (validation) runs uncompiled: one compile per run, not three
        loss = self.cfg.loss
        self.criterion = DetectionLoss(self.model_config.num_classes, loss.alpha, loss.gamma, loss.delta,
                                       loss.box_loss_weight, loss.box_loss, loss.label_smoothing)
        self.matcher = AnchorMatcher(loss.match_threshold, loss.unmatched_threshold)
        self.postprocess_settings = PostprocessSettings.from_mapping(self.cfg.eval)
        self.val_coco = val_coco
        self.evaluator: Optional[CocoEvaluator] = None
        self.last_metrics: dict[str, Any] = {}
        self.nonfinite_steps = 0
        self._consecutive_nonfinite = 0
        # This optimiser step (one or more micro-batches): a device flag, non-zero when the loss was non-finite on
        # any rank, and the image ids of this rank's batches, both read only when the step is decided.
        self._step_nonfinite: Optional[torch.Tensor] = None
        self._step_image_ids: list[torch.Tensor] = []
        self._skipped = False  # the decision for the optimiser step being made
        self._batch_norm_snapshot = BatchNormSnapshot(self.model)

    def _build_model(self) -> EfficientDet:
        """The variant of the config; with ``model.weights``, the model that checkpoint needs (its padding,
        biases and BN settings come from the checkpoint; keys set in the config still apply) with its weights."""
        section = self.cfg.model
        if section.weights:
            # model.phi: the φ of the section's family ('efficientdet_lite0' + phi 0.5 -> 'efficientdet_lite0.5'),
            # as resolved for self.model_config; a bare number would mean the D family.
            name = self.model_config.name if section.phi is not None else section.name
            model = create_model(name, weights=section.weights, reset_class_head=section.reset_class_head,
                                 trust_checkpoint=section.trust_checkpoint,
                                 **dict(model_overrides(section), num_classes=self.model_config.num_classes))
            self.model_config = model.config
            fresh = " except the class predictions where the class count differs (model.reset_class_head)" \
                if section.reset_class_head else ""
            logger.info("initial weights: every tensor from model.weights %s%s", section.weights, fresh)
            if section.pretrained_backbone:
                logger.info("pretrained_backbone '%s' not loaded: model.weights %s provides the backbone (the "
                            "checkpoint's tensors win)", section.pretrained_backbone, section.weights)
            return model
        overrides = {k: v for k, v in self.model_config.to_dict().items() if k != "name"}
        model = create_model(self.model_config.name, **overrides)
        if section.pretrained_backbone:
            from ..checkpoint import load_pretrained_backbone

            load_pretrained_backbone(model.backbone, section.pretrained_backbone)
        return model

    # ------------------------------------------------------------------ helpers

    @property
    def eval_model(self) -> EfficientDet:
        """The EMA weights when EMA is on (used for validation and export), else the raw model."""
        return self.ema.module if self.ema is not None else self.model

    def _anchors(self, image_size) -> torch.Tensor:
        return anchors_for(self.model_config, image_size, self.device)

    def _batch_norms(self) -> list[nn.Module]:
        return [m for m in self.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.cfg.optim.freeze_bn:
            for m in self._batch_norms():
                m.eval()
        if self.ema is not None:
            self.ema.eval()  # the EMA copy is never trained; its BN statistics are averaged
        return self

    def on_train_start(self) -> None:
        # Lightning (2.x) keeps the modes the modules have instead of calling train(): apply ours (frozen
        # batch norms with optim.freeze_bn, the EMA copy in eval mode) before the first step.
        self.train()

    # ------------------------------------------------------------------ training

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int):
        """Loss of one (micro-)batch. Nothing here waits for the device: the matcher runs before the forward (it
        needs only anchors and boxes), the loss is summed first and normalised after one ``all_reduce`` of
        ``[positives, non-finite]`` over the ranks, and whether the optimiser step is skipped is decided in
        :meth:`on_before_optimizer_step`, the step's one host sync."""
        images = normalize(batch["images"], self.model_config.mean, self.model_config.std)
        if self.cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        anchors = self._anchors(images.shape[-2:])
        cls_targets, box_targets, num_positives = self.matcher(
            anchors, batch["boxes"], batch["labels"], batch["crowd_boxes"], batch["crowd_mask"])
        if self._step_nonfinite is None:  # the first micro-batch of an optimiser step
            self._batch_norm_snapshot.take()
            self._step_image_ids = []
        class_outputs, box_outputs = self.model(images)
        sums = self.criterion(class_outputs, box_outputs, cls_targets, box_targets, num_positives, anchors,
                              normalizer=torch.ones((), device=anchors.device))
        positives, nonfinite = self._reduce_over_ranks(num_positives.detach().float().sum(),
                                                        torch.logical_not(torch.isfinite(sums["loss"].detach())))
        # (positives in the global batch + 1) / world_size. DDP averages the ranks' gradients, so with this
        # normaliser the averaged gradient is that of the sum of every rank's loss terms / (global positives + 1):
        # the loss of one process seeing the whole global batch (counting positives per process would weight
        # images by how crowded their rank's batch happens to be). With one process: the usual positives + 1.
        normalizer = (positives + 1.0) / self.trainer.world_size
        class_loss, box_loss = sums["class_loss"] / normalizer, sums["box_loss"] / normalizer
        losses = {"loss": class_loss + self.criterion.box_loss_weight * box_loss, "class_loss": class_loss,
                  "box_loss": box_loss}  # the criterion's own arithmetic, with the global normaliser
        self._step_nonfinite = nonfinite if self._step_nonfinite is None else self._step_nonfinite + nonfinite
        self._step_image_ids.append(batch["image_ids"])
        batch_size = images.shape[0]
        self.log("train/loss", losses["loss"], prog_bar=True, batch_size=batch_size)
        self.log("train/class_loss", losses["class_loss"], batch_size=batch_size)
        self.log("train/box_loss", losses["box_loss"], batch_size=batch_size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], prog_bar=True, batch_size=batch_size)
        return losses["loss"]

    def _reduce_over_ranks(self, positives: torch.Tensor, nonfinite: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sum of positives, number of ranks with a non-finite loss)`` over all ranks: one raw ``all_reduce`` (no
        barrier, no host sync); with one process the values themselves."""
        import torch.distributed as dist

        values = torch.stack([positives.float(), nonfinite.float()])
        if self.trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            dist.all_reduce(values)
        return values[0], values[1]

    def on_before_optimizer_step(self, optimizer) -> None:
        """Decide the optimiser step, with the step's one host sync: a non-finite loss on any rank (every rank holds
        the same reduced flag) drops the gradients everywhere, so the optimiser (momentum, weight decay) and the EMA
        leave this step out, and puts back the batch-norm statistics its forward changed; stop after too many in a
        row. (After backward and before gradient clipping, under every precision, GradScaler included.)"""
        flag, self._step_nonfinite = self._step_nonfinite, None
        self._skipped = flag is not None and bool(flag > 0)
        if not self._skipped:
            self._consecutive_nonfinite = 0
            return
        optimizer.zero_grad(set_to_none=True)  # parameters without a gradient are not updated
        self._batch_norm_snapshot.restore()  # the bad forward's running statistics must not stay
        self.nonfinite_steps += 1
        self._consecutive_nonfinite += 1
        ids = torch.cat(self._step_image_ids).tolist() if self._step_image_ids else []
        logger.warning("non-finite loss at step %d (image ids on this rank %s): step skipped on every rank (%d "
                       "skipped so far)", self.global_step, ids, self.nonfinite_steps)
        if self._consecutive_nonfinite >= MAX_CONSECUTIVE_NONFINITE:
            raise FloatingPointError(
                f"the loss was non-finite for {self._consecutive_nonfinite} consecutive steps (last image ids "
                f"{ids}); training stopped. Lower optim.lr, check the data, or use trainer.precision=32-true. "
                f"The last good checkpoint is intact in {self.cfg.output_dir}/checkpoints.")

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """The optimiser step, then one EMA update: once per optimiser step, also under gradient accumulation
        (``trainer.accumulate_grad_batches``), where several micro-batches make one step. Neither the EMA nor its
        warm-up counter moves for a step skipped for a non-finite loss, or skipped by a GradScaler (16-mixed) for
        non-finite gradients (seen as its scale going down: one more host sync per step, in 16-mixed only)."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None) if self._trainer is not None else None
        scale = getattr(scaler, "_scale", None)  # a device tensor; None before the scaler's first step, which then
        # starts from its initial scale (so a first step it skips is seen too)
        scale = scale.clone() if isinstance(scale, torch.Tensor) else (
            float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else None)
        self._skipped = False
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        skipped = self._skipped or (scale is not None and bool(scaler._scale < scale))
        if self.ema is not None and not skipped:
            self.ema.update(self.model)

    def configure_optimizers(self):
        optim = self.cfg.optim
        decay, no_decay = [], []
        for param in self.model.parameters():
            if param.requires_grad:
                (no_decay if param.ndim <= 1 else decay).append(param)  # BN weights/biases, conv biases
        groups = [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        lr = self.scaled_lr()
        if optim.name == "sgd":
            optimizer = torch.optim.SGD(groups, lr=lr, momentum=optim.momentum)
        else:
            # On accelerators the step counts stay on the device (capturable): the default AdamW reads every
            # parameter's count on the host, one sync per parameter and step. (Not fused: Lightning refuses gradient
            # clipping with optimizers that unscale internally.) On the CPU a host read costs nothing.
            on_accelerator = any(p.device.type in ("cuda", "xpu", "hpu") for p in decay + no_decay)
            optimizer = torch.optim.AdamW(groups, lr=lr, betas=tuple(optim.betas), capturable=on_accelerator)
        trainer = self.trainer
        total = trainer.estimated_stepping_batches  # loads the train loader unless max_epochs=-1
        if not math.isfinite(total):
            raise ConfigError("the learning-rate schedule needs a length: set trainer.max_epochs or trainer.max_steps")
        if trainer.train_dataloader is None:
            trainer.fit_loop.setup_data()
        batches = trainer.num_training_batches
        steps_per_epoch = math.ceil(batches / trainer.accumulate_grad_batches) if math.isfinite(batches) else total
        total = int(total)
        warmup = int(round(optim.warmup_epochs * steps_per_epoch))
        factor = WarmupCosine(total, warmup, optim.warmup_start_factor, optim.min_lr_factor, optim.schedule)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def scaled_lr(self) -> float:
        """``optim.lr`` scaled linearly from ``optim.lr_batch_size`` to the real global batch size."""
        optim = self.cfg.optim
        if not optim.lr_batch_size:
            return float(optim.lr)
        world = self.trainer.world_size if self._trainer is not None else 1
        accumulate = self.trainer.accumulate_grad_batches if self._trainer is not None else 1
        global_batch = self.cfg.data.batch_size * world * accumulate
        return float(optim.lr) * global_batch / float(optim.lr_batch_size)

    # ------------------------------------------------------------------ validation

    def on_validation_epoch_start(self) -> None:
        if self.val_coco is None:
            datamodule = getattr(self.trainer, "datamodule", None)
            if datamodule is None:
                raise RuntimeError("validation needs the val COCO annotations: pass val_coco or a DetectionDataModule")
            self.val_coco = datamodule.val_set.ground_truth  # the file as the official COCO tools load it
        self.evaluator = CocoEvaluator(self.val_coco, self.category_ids, self.class_names, self.cfg.eval.coco_eval,
                                       max_dets=self.postprocess_settings.max_detections)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        model = self.eval_model
        model.eval()
        if isinstance(batch["images"], list):  # images as read (eval.slice_size: the data module's source_val)
            detections = self._detect_source_images(model, batch["images"])
        elif self.postprocess_settings.slice_size is not None:
            raise ConfigError(
                f"eval.slice_size={self.postprocess_settings.slice_size} needs the validation images as read, but the "
                "validation batches are letterboxed: build the data module with source_val=True (tools/train.py does "
                "when eval.slice_size is set), or set eval.slice_size=null")
        else:
            detections = detect_batch(model, batch["images"], batch["scales"], batch["orig_sizes"],
                                      self.postprocess_settings)
        self.evaluator.update(batch["image_ids"].tolist(), [{k: v.cpu() if isinstance(v, torch.Tensor) else v
                                                             for k, v in d.items()} for d in detections])

    def _detect_source_images(self, model: nn.Module, images: list) -> list[dict[str, Any]]:
        """Validation with sliced inference: each image larger than ``eval.slice_size`` slice by slice, the others
        letterboxed as usual (:func:`effdet.ops.slicing.detect_images`, the Predictor's function), all through
        :func:`detect_batch` with the eval settings. Detections as numpy arrays in source pixels."""
        settings, fill = self.postprocess_settings, fill_from_mean(self.model_config.mean)
        image_size = list(self.model_config.image_size)

        def detect(rgb_images):
            canvases, scales, sizes = letterbox_batch(rgb_images, image_size, fill)
            return detect_batch(model, canvases.to(self.device), scales, sizes, settings)

        return detect_images(images, detect, settings)

    def on_validation_epoch_end(self) -> None:
        self.evaluator, evaluator = None, self.evaluator
        metrics = evaluator.compute()  # gathers all ranks, scores every val image exactly once
        self.last_metrics = metrics
        self.last_evaluator = evaluator  # its detections feed the error analysis of the final validation
        if self.trainer.state.fn != TrainerFn.FITTING:
            return  # a stand-alone validate() (e.g. of best.ckpt after training) is reported, not logged as an epoch
        for key in STAT_KEYS:
            # identical on every rank already: no further reduction needed
            self.log(f"val/{key}", float(metrics[key]), prog_bar=key in ("AP", "AP50"), sync_dist=False)

    # ------------------------------------------------------------------ checkpoints

    def setup(self, stage: str) -> None:
        """Fitting: every rank draws its own random stream from ``seed + global_rank`` (drop-path masks and any
        other randomness in the step would otherwise be the same on every GPU). Called once the model is built,
        so the initial weights stay a function of ``seed`` alone; a resume then restores each rank's saved
        state (``on_load_checkpoint`` runs after this hook)."""
        if stage == TrainerFn.FITTING:
            seed_generators(int(self.cfg.seed) + self.trainer.global_rank)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Make the checkpoint self-describing with plain (weights_only-loadable) values; the EMA weights are
        already in ``state_dict`` as ``ema.module.*`` (see ``effdet.checkpoint.fields``, the one definition of these entries)."""
        checkpoint.update(lightning_checkpoint_fields(self.model_config, self.class_names, self.category_ids,
                                                      train_config=OmegaConf.to_container(self.cfg, resolve=True)))
        # Every rank's generators (drop-path masks draw from them), so each rank of a resumed run continues its
        # own random stream. Data order and augmentation do not need them (effdet.data.resumable).
        checkpoint["effdet_rng_state"] = {"ranks": gather_rng_states(self.trainer.strategy.root_device)}
        checkpoint["effdet_nonfinite_steps"] = self.nonfinite_steps

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Resuming a fit: restore the generators saved by ``on_save_checkpoint``."""
        if self._trainer is None or self.trainer.state.fn != TrainerFn.FITTING:
            return
        rank = self.trainer.global_rank
        rng = checkpoint.get("effdet_rng_state") or {}
        ranks = rng.get("ranks") or ([rng] if "torch" in rng else [])  # earlier checkpoints: one state, rank 0's
        if rank < len(ranks):
            set_rng_state(ranks[rank], self.trainer.strategy.root_device)  # the module may still be on the CPU
        elif ranks:
            logger.warning("the checkpoint holds the random state of %d rank(s); rank %d starts a new stream from "
                           "seed %d + rank", len(ranks), rank, self.cfg.seed)
        self.nonfinite_steps = int(checkpoint.get("effdet_nonfinite_steps", 0))

