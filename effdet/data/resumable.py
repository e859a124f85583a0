"""Training-data order and augmentation as pure functions of (seed, epoch, sample), so a run can stop anywhere
and continue with exactly the batches and augmentations an uninterrupted run would have seen.

* :class:`EpochSampler` (a ``DistributedSampler``, also with one process) shuffles each epoch with a
  permutation drawn from ``seed + epoch`` and gives rank ``r`` of ``W`` the positions ``r, r+W, …``. It yields
  ``(epoch, index)`` keys and can start ``k`` batches into an epoch (after a resume).
* :class:`SeededSamples` wraps a dataset whose random transforms draw from torch's default generator
  (``effdet.data.transforms``): item ``(epoch, index)`` is made with that generator seeded from
  ``(seed, epoch, index)``, so it is the same in any process, worker or resumed run.
* :class:`ResumableLoader` is a ``DataLoader`` with ``state_dict`` / ``load_state_dict``: Lightning saves
  that state in every checkpoint (``loops.fit_loop.state_dict.combined_loader``) and hands it back when a
  run resumes, before the first batch is drawn.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

__all__ = ["EpochSampler", "ResumableLoader", "SeededSamples", "sample_seed"]


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` in ``epoch`` of a run seeded with ``seed`` (numpy SeedSequence mix)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(epoch), int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class SeededSamples(Dataset):
    """``dataset[index]`` made under torch's default generator seeded by :func:`sample_seed`.

    Indexed by ``(epoch, index)`` keys (from :class:`EpochSampler`); a plain ``int`` index means epoch 0.
    The caller's generator state is left untouched (``torch.random.fork_rng``).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, epoch, index))
            return self.dataset[index]


class EpochSampler(DistributedSampler):
    """Epoch-seeded shuffling split across ``num_replicas`` ranks; yields ``(epoch, index)``.

    ``start_batch`` (set by :meth:`ResumableLoader.load_state_dict`) skips that many batches of
    ``batch_size`` at the start of the next pass only. Lightning calls ``set_epoch`` every epoch and leaves
    samplers that already are ``DistributedSampler`` in place.
    """

    def __init__(self, dataset: Dataset, batch_size: int, num_replicas: int = 1, rank: int = 0,
                 shuffle: bool = True, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=int(seed),
                         drop_last=False)
        self.batch_size = int(batch_size)
        self.start_batch = 0

    def __iter__(self) -> Iterator[Tuple[int, int]]:  # type: ignore[override]
        indices = list(super().__iter__())
        start, self.start_batch = self.start_batch * self.batch_size, 0
        epoch = self.epoch
        return iter([(epoch, int(i)) for i in indices[start:]])


class ResumableLoader(DataLoader):
    """A DataLoader over an :class:`EpochSampler` whose position is saved in checkpoints.

    ``position()`` returns ``(epoch, batches done)`` as the training loop counts them (the loader itself
    cannot: the loop fetches one batch ahead). ``load_state_dict`` makes the next pass start there.
    """

    def __init__(self, *args: Any, position: Optional[Callable[[], Tuple[int, int]]] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochSampler):
            raise TypeError("ResumableLoader needs an EpochSampler (sampler=...)")
        self.position = position

    def state_dict(self) -> Dict[str, int]:
        epoch, done = self.position() if self.position is not None else (self.sampler.epoch, 0)
        return {"epoch": int(epoch), "batches_done": int(done)}

    def load_state_dict(self, state: Dict[str, int]) -> None:
        self.sampler.set_epoch(int(state["epoch"]))
        self.sampler.start_batch = int(state["batches_done"])
