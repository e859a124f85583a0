"""The Lightning data module of training: train/val datasets from a config's ``data`` section (COCO, VOC, YOLO),
with a training order that resumes mid-epoch."""
from __future__ import annotations

import logging
from typing import Optional

import lightning as L
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from ..data import CocoDetection, collate_detection, eval_transforms, train_transforms, worker_init_fn
from ..data.collate import collate_source_images
from ..data.resumable import EpochSampler, SeededSamples
from ..data.tiles import TileSettings, TiledDetection, tile_coco
from ..data.preprocess import fill_from_mean
from .schema import ConfigError

__all__ = ["DetectionDataModule"]

logger = logging.getLogger("effdet.training")


class DetectionDataModule(L.LightningDataModule):
    """Train/val datasets from a config's ``data`` section (COCO JSON, or VOC / YOLO imported by ``data.format``),
    validated when constructed.

    Building the datasets reads and checks both annotation files up front (see ``CocoDetection``),
    so bad data stops the run before a Trainer starts. The training order and augmentation are pure
    functions of ``(seed, epoch, sample)`` (see ``effdet.data.resumable``), so a resumed run sees the same
    batches as an uninterrupted one, with any number of processes or loader workers.

    With ``data.tile_size`` set, ``train_set`` is the tiles of the training images (:class:`effdet.data.tiles.TiledDetection`):
    each epoch's tile list is a function of ``(seed, epoch)``, so tiles shard and resume like images.

    ``source_val``: the validation images as read, not letterboxed (``collate_source_images`` batches), for
    validation with sliced inference (``eval.slice_size``; the runner sets it then).
    """

    def __init__(self, data_cfg: DictConfig, image_size: list[int], mean: list[float], seed: int = 0,
                 source_val: bool = False):
        super().__init__()
        self.cfg = data_cfg
        self.source_val = bool(source_val)
        self.seed = int(seed)
        self._train_sampler: Optional[EpochSampler] = None
        self._resume_position: Optional[tuple[int, int]] = None  # from a resumed checkpoint
        fill = fill_from_mean(mean)
        from ..data.formats import dataset_sources  # COCO as is, VOC/YOLO converted; the fast data checks run here

        sources = dataset_sources(data_cfg)
        augment = train_transforms(image_size, tuple(data_cfg.scale_range), fill, data_cfg.hflip,
                                   min_visible=data_cfg.crop_min_visible, resize=data_cfg.train_resize)
        self.tiles = TileSettings.from_config(data_cfg)
        # the training images; with tiles, read whole (no transform) and cut into tiles that are then augmented
        self.train_images = CocoDetection(**sources["train"], transform=None if self.tiles else augment,
                                          check_files=data_cfg.check_files)
        self.train_set = (self.train_images if self.tiles is None
                          else TiledDetection(self.train_images, self.tiles, augment, seed=self.seed))
        self.val_set = CocoDetection(
            **sources["val"], transform=None if self.source_val else eval_transforms(image_size, fill),
            check_files=data_cfg.check_files)
        if self.train_set.category_ids != self.val_set.category_ids:
            raise ConfigError(
                f"train and val annotation files have different categories: train ids "
                f"{self.train_set.category_ids}, val ids {self.val_set.category_ids} "
                f"('{data_cfg.train.annotations}' vs '{data_cfg.val.annotations}')")
        if self.train_set.class_names != self.val_set.class_names:
            logger.warning("train and val category names differ; using the train names %s", self.train_set.class_names)

    def training_annotations(self) -> dict:
        """The training boxes as training presents them, as a COCO dict (for the start-up anchor check): the
        annotation file's (cleaned) images and boxes, or with tiles on their tiles and the boxes each keeps
        (:func:`effdet.data.tiles.tile_coco`)."""
        coco = self.train_images.coco.dataset
        return coco if self.tiles is None else tile_coco(coco, self.tiles)

    def drop_annotation_index(self) -> None:
        """Drop the training set's COCO index after its last reader (the anchor check), so that loader workers of
        every rank get the dataset without it."""
        self.train_images.coco = self.train_images.ground_truth = None

    @property
    def class_names(self) -> list[str]:
        return list(self.train_set.class_names)

    @property
    def category_ids(self) -> list[int]:
        return list(self.train_set.category_ids)

    def _loader(self, dataset: CocoDetection, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        workers = int(self.cfg.num_workers)
        return DataLoader(
            dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=workers,
            collate_fn=collate_source_images if dataset.transform is None else collate_detection, worker_init_fn=worker_init_fn, persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        """This rank's share of each epoch (``EpochSampler``), starting where a resumed run stopped."""
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        batch_size = self.cfg.batch_size
        sampler = EpochSampler(self.train_set, batch_size, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        if self._resume_position is not None:
            sampler.resume_at(*self._resume_position)
        self._train_sampler = sampler
        workers = int(self.cfg.num_workers)
        return DataLoader(
            SeededSamples(self.train_set, self.seed), batch_size=batch_size, sampler=sampler,
            drop_last=len(sampler) > batch_size, num_workers=workers, collate_fn=collate_detection,
            worker_init_fn=worker_init_fn, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
            generator=torch.Generator().manual_seed(self.seed))  # worker seeds never draw from the global generator

    def train_position(self) -> tuple[int, int]:
        """(epoch, batches of it done) as the fit loop counts them (the loader cannot: the loop fetches one batch
        ahead); a finished epoch is (epoch + 1, 0)."""
        trainer, sampler = self.trainer, self._train_sampler
        epoch = sampler.epoch if sampler is not None else 0
        if trainer is None or sampler is None:
            return epoch, 0
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if done >= trainer.num_training_batches:
            return epoch + 1, 0
        return epoch, done

    def state_dict(self) -> dict[str, int]:
        """Saved in every checkpoint by Lightning: where the training data stands."""
        if self._train_sampler is None:
            return {}
        epoch, done = self.train_position()
        return {"train_epoch": int(epoch), "train_batches_done": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Called by Lightning when a fit resumes, before the training loader is built."""
        if "train_epoch" in state:
            self._resume_position = (int(state["train_epoch"]), int(state["train_batches_done"]))
            if self._train_sampler is not None:
                self._train_sampler.resume_at(*self._resume_position)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.cfg.val_batch_size or self.cfg.batch_size, False, False)


def __getattr__(name: str):
    if name == "CocoDataModule":  # its old name: it also serves VOC and YOLO data
        from ..deprecation import deprecated_name

        deprecated_name("effdet.training.CocoDataModule", "effdet.engine.DetectionDataModule")
        return DetectionDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
