"""The weights training validates and saves: an exponential moving average of the model (TF's warm-up), and a
snapshot of the batch-norm statistics that a skipped step puts back."""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

__all__ = ["BatchNormSnapshot", "ExponentialMovingAverage"]


class ExponentialMovingAverage(nn.Module):
    """EMA of a model's parameters and buffers with TF's warm-up: ``avg = d·avg + (1-d)·model`` with
    ``d_t = min(decay, (1+t)/(warmup+t))`` after ``t`` updates (TF: ``warmup = 10``); the first update copies the
    model. Until ``decay`` caps it, the average spans about ``(warmup+t)/(warmup-1)`` steps, i.e. the last
    ``1/(warmup-1)`` of the steps so far: a larger ``warmup`` follows the weights more closely in a short run.

    Written for training on accelerators: the update is a few ``torch._foreach_*`` calls per (device, dtype) group
    and never waits for the device. The warm-up counter ``t`` lives on the host (``updates``); the buffer
    ``n_averaged`` mirrors it for checkpoints. Integer buffers (BN ``num_batches_tracked``) are copied, floating
    ones averaged. An update whose floating-point values hold any NaN or inf leaves the average as it is (decided on
    the device). The state dict is that of ``torch.optim.swa_utils.AveragedModel`` (``module.*``, ``n_averaged``),
    which earlier runs saved, so their ``last.ckpt`` resumes and their ``best.ckpt`` loads unchanged.
    """

    def __init__(self, model: nn.Module, decay: float, warmup: float = 10.0) -> None:
        super().__init__()
        if not warmup > 1.0:
            raise ValueError(f"the EMA's warm-up constant must be > 1 (1 would never move the average), got {warmup}")
        self.module = copy.deepcopy(model)
        self.module.requires_grad_(False)
        self.decay = float(decay)
        self.warmup = float(warmup)
        self.register_buffer("n_averaged", torch.tensor(0, dtype=torch.long, device=_module_device(model)))
        self.updates = 0

    def decay_at(self, updates: int) -> float:
        """The weight of the average after ``updates`` updates (TF's warm-up)."""
        return min(self.decay, (1.0 + updates) / (self.warmup + updates))

    def _groups(self, model: nn.Module) -> dict[tuple, tuple[list[torch.Tensor], list[torch.Tensor]]]:
        averaged = [*self.module.parameters(), *self.module.buffers()]
        current = [*model.parameters(), *model.buffers()]
        if len(averaged) != len(current):
            raise ValueError(f"the EMA holds {len(averaged)} tensors, the model {len(current)}")
        groups: dict[tuple, tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for a, c in zip(averaged, current):
            group = groups.setdefault((a.device, a.dtype), ([], []))
            group[0].append(a.detach())
            group[1].append(c.detach())
        return groups

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Average ``model`` (the same architecture) into the EMA."""
        for (_, dtype), (averaged, current) in self._groups(model).items():
            if self.updates == 0 or not dtype.is_floating_point:
                torch._foreach_copy_(averaged, current)
                continue
            # the norm of a tensor is non-finite when any of its values is: one flag for the whole group
            finite = torch.stack(torch._foreach_norm(current)).isfinite().all()
            current = [torch.where(finite, c, a) for a, c in zip(averaged, current)]
            torch._foreach_lerp_(averaged, current, 1.0 - self.decay_at(self.updates))
        self.updates += 1
        self.n_averaged.fill_(self.updates)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "n_averaged" in state_dict:
            self.updates = int(state_dict[prefix + "n_averaged"])  # read once, when a checkpoint is loaded


def _module_device(model: nn.Module) -> torch.device:
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    return tensor.device if tensor is not None else torch.device("cpu")


class BatchNormSnapshot:
    """A copy of a model's batch-norm buffers (running mean/var, batch counts), taken before each training forward
    and put back when that step is skipped: a forward that produced a non-finite loss has already moved the
    running statistics (possibly to NaN/inf), and dropping its gradients alone would keep them. Device copies
    only, no host sync. The buffers are looked up at each call (moving a module to a device replaces them)."""

    def __init__(self, model: nn.Module) -> None:
        self.norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.saved: list[torch.Tensor] = []

    def _buffers(self) -> list[torch.Tensor]:
        return [b for m in self.norms for b in m.buffers()]

    @torch.no_grad()
    def take(self) -> None:
        buffers = self._buffers()
        if len(buffers) != len(self.saved) or any(s.device != b.device for s, b in zip(self.saved[:1], buffers)):
            self.saved = [b.detach().clone() for b in buffers]
        elif buffers:
            torch._foreach_copy_(self.saved, buffers)

    @torch.no_grad()
    def restore(self) -> None:
        if self.saved:
            torch._foreach_copy_(self._buffers(), self.saved)
