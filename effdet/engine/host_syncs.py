"""Count the operations that make the host wait for the device (host↔device synchronisations).

On a GPU each of them stalls the queue of kernels, and under DDP holds every rank in lockstep; the training step,
the matcher, the loss, the EMA and soft-NMS are written to need as few as possible. The counter works on any
device, the CPU included, because it looks at which operations run, not at how long they take:

* ``aten::_local_scalar_dense`` (``.item()``, ``float(t)``, ``bool(t)``, ``int(t)``), ``aten::is_nonzero``;
* ``aten::nonzero`` and ``aten::masked_select`` (their output size depends on the data);
* indexing with a boolean mask (``t[mask]``, ``t[mask] = v``: ``aten::index`` / ``aten::index_put_`` with a
  bool index, which runs ``nonzero``);
* ``aten::unique*`` (data-dependent size);
* copies from an accelerator to the CPU (``.cpu()``, ``.tolist()``, ``.numpy()``): counted when the source is on
  an accelerator (on the CPU these are no operations at all, so they cannot be seen there).

    with HostSyncCounter() as syncs:
        step()
    assert syncs.total <= 1, syncs.report()
"""
from __future__ import annotations

import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostSyncCounter", "SYNCING_OPS"]

# Operations that always wait for the device's result.
SYNCING_OPS = frozenset({"_local_scalar_dense", "is_nonzero", "nonzero", "nonzero_static", "masked_select",
                         "_unique", "_unique2", "unique_dim", "unique_consecutive"})
_INDEXING_OPS = frozenset({"index", "index_put", "index_put_", "_index_put_impl_"})
_COPY_OPS = frozenset({"_to_copy", "copy_"})
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def _has_bool_index(args: tuple) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (indices or ()))


def _device_to_host(name: str, args: tuple, kwargs: dict) -> bool:
    if name == "copy_":
        destination, source = args[0], args[1]
        return destination.device.type == "cpu" and source.device.type not in ("cpu", "meta")
    source = args[0]
    target = kwargs.get("device")
    return isinstance(source, torch.Tensor) and source.device.type not in ("cpu", "meta") and \
        target is not None and torch.device(target).type == "cpu"


_PROJECT_FOLDERS = ("effdet", "backbones", "heads", "tests", "tools", "benchmarks")


def _caller() -> str:
    """The innermost frame of this project (its folders in _PROJECT_FOLDERS) that led to the operation."""
    for frame in reversed(traceback.extract_stack()[:-3]):
        path = Path(frame.filename).resolve()
        # (a virtual environment inside the checkout, as `make` creates it in .venv/, is not the project)
        if _PACKAGE_ROOT in path.parents and path.name != "host_syncs.py" and \
                path.relative_to(_PACKAGE_ROOT).parts[0] in _PROJECT_FOLDERS:
            return f"{path.relative_to(_PACKAGE_ROOT)}:{frame.lineno} ({frame.name})"
    return "outside the project"


class HostSyncCounter(TorchDispatchMode):
    """Counts synchronising operations run inside the ``with`` block, by operation and by the project's line
    that led to them (``where``)."""

    def __init__(self) -> None:
        super().__init__()
        self.by_op: Counter = Counter()
        self.where: Counter = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        syncing = (name in SYNCING_OPS or (name in _INDEXING_OPS and _has_bool_index(args))
                   or (name in _COPY_OPS and _device_to_host(name, args, kwargs)))
        if syncing:
            label = f"{name} (bool index)" if name in _INDEXING_OPS else name
            self.by_op[label] += 1
            self.where[_caller()] += 1
        return func(*args, **kwargs)

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def report(self) -> str:
        lines = [f"{self.total} synchronising operation(s)"]
        lines += [f"  {count:4d}  {op}" for op, count in self.by_op.most_common()]
        lines += [f"  {count:4d}  at {place}" for place, count in self.where.most_common()]
        return "\n".join(lines)
