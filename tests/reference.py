"""Where the reference `effdet` package (PyPI effdet 0.4.1 + timm) lives, and how tests run it.

The reference is also called `effdet`, so it is never imported in the test process: it runs in a subprocess
whose PYTHONPATH holds only the reference folder: ``$EFFDET_PARITY_PATH``, else ``<repo>/.parity``
(made by ``make parity-env``). Without it, tests that need it (``needs_reference``, test_parity.py) FAIL, so a
broken install cannot pass as green; a developer without the reference opts out explicitly with
``EFFDET_SKIP_PARITY=1`` (they are then skipped, and the pytest summary counts them). With ``CI=true`` the opt-out
is ignored: CI always runs them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NoReturn, Optional

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SKIP_REASON = ("reference effdet 0.4.1 not found: run `make parity-env` (fills .parity/) or set EFFDET_PARITY_PATH "
               "to a folder holding the effdet and timm packages")


def reference_path(require_timm: bool = False) -> Optional[Path]:
    configured = os.environ.get("EFFDET_PARITY_PATH")
    candidate = Path(configured) if configured else REPO / ".parity"
    if not (candidate / "effdet" / "anchors.py").is_file():
        return None
    if require_timm and not (candidate / "timm").is_dir():
        return None
    return candidate.resolve()


REFERENCE = reference_path()
OPT_OUT = "parity opted out (EFFDET_SKIP_PARITY=1)"  # the skip reason the summary counts (conftest.py)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing_reference(reason: str = SKIP_REASON) -> NoReturn:
    """Called by a test that needs the reference when it is missing: skip when the developer opted out
    (``EFFDET_SKIP_PARITY=1``, not in CI), else fail saying how to install it or opt out."""
    if os.environ.get("EFFDET_SKIP_PARITY") == "1" and not in_ci():
        pytest.skip(f"{OPT_OUT}: {reason}")
    how = ("CI=true: the parity tests must run; fix `make parity-env`" if in_ci()
           else "or set EFFDET_SKIP_PARITY=1 to skip the parity tests explicitly")
    pytest.fail(f"{reason}; {how}", pytrace=False)


@pytest.fixture
def _reference_available() -> None:
    if REFERENCE is None:
        missing_reference()


needs_reference = pytest.mark.usefixtures("_reference_available")

# Loads the reference's modules without its package __init__ (which would import timm).
_PRELUDE = """
import sys, types, torch
_pkg = types.ModuleType("effdet"); _pkg.__path__ = [sys.argv[1] + "/effdet"]; sys.modules["effdet"] = _pkg
inputs = torch.load(sys.argv[2])
"""


def run_reference(script: str, inputs: dict) -> dict:
    """Run ``script`` against the reference in a subprocess; it reads ``inputs`` and sets ``outputs``."""
    with tempfile.TemporaryDirectory() as tmp:
        in_path, out_path = Path(tmp) / "in.pt", Path(tmp) / "out.pt"
        torch.save(inputs, in_path)
        code = _PRELUDE + script + "\ntorch.save(outputs, sys.argv[3])\n"
        env = dict(os.environ, PYTHONPATH=str(REFERENCE), HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
        done = subprocess.run(
            [sys.executable, "-c", code, str(REFERENCE), str(in_path), str(out_path)],
            env=env, capture_output=True, text=True, timeout=600,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return torch.load(out_path)
