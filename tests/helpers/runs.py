"""Real `tools/train.py` runs in a subprocess, for the interruption and resume tests: their environment, waiting for
a mid-epoch checkpoint, and comparing final weights."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import torch

from .env import REPO


def train_env(**extra: str) -> dict:
    """The environment of a tool run: this checkout first on the path, one torch thread."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def step_of(path: Path) -> int:
    """The global step a checkpoint holds."""
    return int(torch.load(path, weights_only=True, mmap=True)["global_step"])


def max_difference(a: dict, b: dict) -> float:
    """Largest absolute difference between two state dicts with the same keys."""
    assert a.keys() == b.keys()
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def start_and_wait_for_checkpoint(command, out: Path, min_step: int, timeout: float = 3000) -> subprocess.Popen:
    """Start a run; return once ``out/checkpoints/last.ckpt`` holds step >= ``min_step`` (written mid-epoch)."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=train_env(),
                               cwd=str(REPO))
    last = out / "checkpoints" / "last.ckpt"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if last.exists() and step_of(last) >= min_step:
            return process
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    process.kill()
    raise AssertionError("no mid-epoch checkpoint appeared")
