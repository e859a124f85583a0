"""Training-data order and augmentation as pure functions of (seed, epoch, sample), so a run can stop anywhere
and continue with exactly the batches and augmentations an uninterrupted run would have seen.

* :class:`EpochSampler` (a ``DistributedSampler``, also with one process) shuffles each epoch with a
  permutation drawn from ``seed + epoch`` and gives rank ``r`` of ``W`` the positions ``r, r+W, …``. It yields
  ``(epoch, index)`` keys and can start ``k`` batches into an epoch (after a resume).
* :class:`SeededSamples` wraps a dataset whose random transforms draw from torch's default generator
  (``effdet.data.transforms``): item ``(epoch, index)`` is made with that generator seeded from
  ``(seed, epoch, index)``, so it is the same in any process, worker or resumed run.
* The training position (epoch, batches done) goes into every checkpoint through the data module's
  ``state_dict`` (``effdet.engine.datamodule.DetectionDataModule``), which Lightning restores before it builds the loader;
  :meth:`EpochSampler.resume_at` then starts the loader there. (A stateful DataLoader is not enough: Lightning
  2.x builds the training loader to count the schedule's steps before it restores the loop state, and never
  hands that loader its saved state.)
"""

from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

__all__ = ["EpochSampler", "SeededSamples", "sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` in ``epoch`` of a run seeded with ``seed`` (numpy SeedSequence mix)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SeededSamples(Dataset):
    """``dataset[index]`` made under torch's default generator seeded by :func:`sample_seed`.

    Indexed by ``(epoch, index)`` keys (from :class:`EpochSampler`); a plain ``int`` index means epoch 0. A dataset
    with an ``epoch_item(epoch, index)`` method (:class:`effdet.data.tiles.TiledDetection`, whose tile list depends
    on the epoch) is asked through it.
    The caller's generator state is left untouched (``torch.random.fork_rng``).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        epoch_item = getattr(self.dataset, "epoch_item", None)  # datasets whose items depend on the epoch (tiles)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return epoch_item(epoch, index) if epoch_item is not None else self.dataset[index]


class EpochSampler(DistributedSampler):
    """Epoch-seeded shuffling split across ``num_replicas`` ranks; yields ``(epoch, index)``.

    :meth:`resume_at` makes passes over epoch ``e`` start ``k`` batches of ``batch_size`` in (a run resumed
    mid-epoch); passes over any later epoch are whole again. Lightning calls ``set_epoch`` every epoch and
    leaves samplers that already are ``DistributedSampler`` in place.
    """

    def __init__(self, dataset: Dataset, batch_size: int, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=int(seed),
                         drop_last=False)
        self.batch_size = int(batch_size)
        self._resume: Optional[tuple[int, int]] = None

    def resume_at(self, epoch: int, batches_done: int) -> None:
        """Start at batch ``batches_done`` of ``epoch`` (and make ``epoch`` the current one)."""
        self.set_epoch(int(epoch))
        self._resume = (int(epoch), int(batches_done))

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())
        epoch, start = self.epoch, 0
        if self._resume is not None:
            if self._resume[0] == epoch:
                # Every pass over the resumed epoch skips (the trainer may create its iterator twice).
                start = self._resume[1] * self.batch_size
            else:
                self._resume = None
        return iter([(epoch, int(i)) for i in indices[start:]])
