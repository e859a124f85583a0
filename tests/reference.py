"""The reference runner for tests: :mod:`effdet.benchmarks.reference`, plus the skip marker."""
from __future__ import annotations

import pytest

from effdet.benchmarks.reference import RUNNER, SKIP_REASON, reference_path, run_reference

REFERENCE = reference_path()
needs_reference = pytest.mark.skipif(REFERENCE is None, reason=SKIP_REASON)

__all__ = ["REFERENCE", "RUNNER", "needs_reference", "reference_path", "run_reference"]
