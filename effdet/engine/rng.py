"""Random state of a training run: seeding every generator, and each rank's generator states as checkpoint
values (``weights_only``-loadable), so a resumed run continues the same random streams."""
from __future__ import annotations

from typing import Any

import torch

__all__ = ["gather_rng_states", "rng_state", "seed_generators", "set_rng_state"]


def seed_generators(seed: int) -> None:
    """Seed Python's, numpy's and torch's (CPU and every CUDA device's) global generators."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state(device: torch.device) -> dict[str, Any]:
    """This process's generator states as ``weights_only``-loadable values (tensors, ints, tuples)."""
    import random

    import numpy as np

    kind, keys, position, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss))}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` saved (parts a checkpoint does not hold are left as they are)."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in state:
        kind, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    if device.type == "cuda" and "cuda" in state:
        cuda = state["cuda"]
        if isinstance(cuda, (list, tuple)):  # earlier checkpoints: every visible device's state
            cuda = cuda[device.index or 0] if len(cuda) > (device.index or 0) else None
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)


def gather_rng_states(device: torch.device) -> list[dict[str, Any]]:
    """Every rank's :func:`rng_state`, in rank order (a collective call under ``torch.distributed``)."""
    import torch.distributed as dist

    state = rng_state(device)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [state]
    states: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(states, state)
    return states
