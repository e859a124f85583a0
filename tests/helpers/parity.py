"""The reference runner for tests (:mod:`helpers.reference`, tests/helpers/reference.py) and the parity policy.

The reference `effdet` 0.4.1 + timm runs in a subprocess whose PYTHONPATH holds only its folder:
``$EFFDET_PARITY_PATH``, else ``<repo>/.parity`` (made by ``make parity-env``). Without it, tests that need it
(``needs_reference``, test_parity.py) FAIL, so a broken install cannot pass as green; a developer without the
reference opts out explicitly with ``EFFDET_SKIP_PARITY=1`` (they are then skipped, and the pytest summary counts
them). With ``CI=true`` the opt-out is ignored: CI always runs them.
"""
from __future__ import annotations

import os
from typing import NoReturn

import pytest

from tests.helpers.reference import RUNNER, SKIP_REASON, reference_path, run_reference

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

__all__ = ["OPT_OUT", "REFERENCE", "RUNNER", "in_ci", "missing_reference", "needs_reference", "reference_path",
           "run_reference"]
