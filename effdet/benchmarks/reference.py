"""Where the reference `effdet` package (PyPI effdet 0.4.1 + timm) lives, and how to run code against it.

The reference is also called `effdet`, so it is never imported in our process: it runs in a subprocess
whose PYTHONPATH holds only the reference folder: ``$EFFDET_PARITY_PATH``, else ``<repo>/.parity``
(made by ``make parity-env``). Used by the tests (parity) and the benchmarks (ours against the reference);
``reference_runner.py`` beside this file is the script the parity tests run there.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import torch

RUNNER = Path(__file__).with_name("reference_runner.py")
REPO = Path(__file__).resolve().parents[2]
SKIP_REASON = ("reference effdet 0.4.1 not found: run `make parity-env` (fills .parity/) or set EFFDET_PARITY_PATH "
               "to a folder holding the effdet and timm packages")


def reference_path(require_timm: bool = False) -> Optional[Path]:
    """The folder holding the reference ``effdet`` (and ``timm`` when ``require_timm``), or None."""
    configured = os.environ.get("EFFDET_PARITY_PATH")
    candidate = Path(configured) if configured else REPO / ".parity"
    if not (candidate / "effdet" / "anchors.py").is_file():
        return None
    if require_timm and not (candidate / "timm").is_dir():
        return None
    return candidate.resolve()



# Loads the reference's modules without its package __init__ (which would import timm).
_PRELUDE = """
import sys, types, torch
_pkg = types.ModuleType("effdet"); _pkg.__path__ = [sys.argv[1] + "/effdet"]; sys.modules["effdet"] = _pkg
inputs = torch.load(sys.argv[2])
"""


def run_reference(script: str, inputs: dict) -> dict:
    """Run ``script`` against the reference in a subprocess; it reads ``inputs`` and sets ``outputs``."""
    reference = reference_path()
    if reference is None:
        raise RuntimeError(SKIP_REASON)
    with tempfile.TemporaryDirectory() as tmp:
        in_path, out_path = Path(tmp) / "in.pt", Path(tmp) / "out.pt"
        torch.save(inputs, in_path)
        code = _PRELUDE + script + "\ntorch.save(outputs, sys.argv[3])\n"
        env = dict(os.environ, PYTHONPATH=str(reference), HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
        done = subprocess.run(
            [sys.executable, "-c", code, str(reference), str(in_path), str(out_path)],
            env=env, capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return torch.load(out_path)


__all__ = ["REPO", "RUNNER", "SKIP_REASON", "reference_path", "run_reference"]
