"""Where the reference ``effdet`` package (PyPI effdet 0.4.1 + timm) lives, and the subprocess runners of the
comparisons: ours (this checkout) and the reference.

The reference is also called ``effdet``, so it is never imported in our process: it runs in a subprocess whose
PYTHONPATH holds only the reference folder: ``$EFFDET_PARITY_PATH``, else ``<repo>/.parity`` (made by
``make parity-env``). The parity tests find it here too (tests/helpers/parity.py).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

from effdet.benchmark.common import fmt_time, own_pythonpath, run_worker

ROOT = Path(__file__).resolve().parents[1]
WORKERS = Path(__file__).with_name("workers.py")
NOT_FOUND = "the reference package was not found: run `make parity-env` or set EFFDET_PARITY_PATH"


def reference_path(require_timm: bool = False) -> Optional[Path]:
    """The folder holding the reference ``effdet`` (and ``timm`` when ``require_timm``), or None."""
    configured = os.environ.get("EFFDET_PARITY_PATH")
    candidate = Path(configured) if configured else ROOT / ".parity"
    if not (candidate / "effdet" / "anchors.py").is_file():
        return None
    if require_timm and not (candidate / "timm").is_dir():
        return None
    return candidate.resolve()


def run_ours(kind: str, *args, threads: int = 2) -> dict:
    """``WORKERS[kind](*args)`` of :mod:`benchmarks.workers` in a fresh interpreter, with this checkout's packages."""
    return run_worker(kind, *args, threads=threads, workers=WORKERS, cwd=str(ROOT),
                      pythonpath=os.pathsep.join([str(ROOT), own_pythonpath()]))


def run_reference(kind: str, *args, threads: int = 2) -> dict:
    """The same in an interpreter whose import path is only the reference folder (nothing of this project)."""
    path = reference_path()
    if path is None:
        raise RuntimeError(NOT_FOUND)
    return run_worker(kind, *args, threads=threads, workers=WORKERS, pythonpath=str(path), cwd=tempfile.gettempdir())


__all__ = ["NOT_FOUND", "ROOT", "fmt_time", "reference_path", "run_ours", "run_reference"]
