"""Running code against the reference `effdet` package (PyPI effdet 0.4.1 + timm) for the tests.

The reference is also called `effdet`, so it is never imported in our process: it runs in a subprocess whose
PYTHONPATH holds only the reference folder, which :func:`benchmarks.common.reference_path` finds
(``$EFFDET_PARITY_PATH``, else ``<repo>/.parity``, made by ``make parity-env``). ``reference_runner.py`` beside this
file is the script the parity tests (tests/parity/test_parity.py) run there.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import reference_path

RUNNER = Path(__file__).with_name("reference_runner.py")
SKIP_REASON = ("reference effdet 0.4.1 not found: run `make parity-env` (fills .parity/) or set EFFDET_PARITY_PATH "
               "to a folder holding the effdet and timm packages")

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


__all__ = ["RUNNER", "SKIP_REASON", "reference_path", "run_reference"]
