"""Atomic file writes: a file is either its previous version or the complete new one, never half written.

Used for everything a run must not lose: checkpoints, ``config.yaml``, ``metrics.json``, exported weights and
the demo dataset's annotation files.
"""
from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any, Iterator
from .types import PathLike



@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; on success it is flushed to disk and renamed over
    ``path`` (``os.replace``); if the block raises (or the process dies), ``path`` keeps its previous content
    and the temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        yield tmp
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(path: PathLike, obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as strict JSON (no NaN/Infinity) to ``path`` atomically; it is serialised before the
    file is touched, so an unserialisable object leaves the previous file as it was."""
    text = json.dumps(obj, indent=indent, allow_nan=False)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
