"""A missing reference package cannot pass as green: the parity tests fail, unless a developer opts out with
EFFDET_SKIP_PARITY=1 (then the summary says how many did not run); in CI (CI=true) they fail regardless."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _pytest_without_reference(**env):
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "EFFDET_SKIP_PARITY")}
    environment.update(PYTHONPATH=str(ROOT), EFFDET_PARITY_PATH=str(ROOT / "no-such-folder"), **env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "parity",
                           "tests/unit/test_anchors.py"], capture_output=True, text=True, env=environment, cwd=str(ROOT),
                          timeout=600)


@pytest.mark.slow
@pytest.mark.parametrize("env,code,message", [
    ({}, 1, "EFFDET_SKIP_PARITY=1 to skip the parity tests explicitly"),
    ({"EFFDET_SKIP_PARITY": "1"}, 0, "1 parity tests did NOT run: parity opted out (EFFDET_SKIP_PARITY=1)"),
    ({"EFFDET_SKIP_PARITY": "1", "CI": "true"}, 1, "CI=true: the parity tests must run"),
])
def test_missing_reference_fails_unless_opted_out(env, code, message):
    result = _pytest_without_reference(**env)
    assert result.returncode == code, result.stdout[-2000:]
    assert message in result.stdout
