"""Shared fixtures and hooks. What tests import (the repository root, tool environments, test dependencies, the
parity policy, checkpoint writers) is in the package tests/helpers/; the checkout is on the path by pytest.ini
(``pythonpath = .``), so ``tests.helpers`` imports like any package."""
from __future__ import annotations

import re
import signal
import subprocess
import sys

import pytest

from tests.helpers.env import HOW_TO_INSTALL, MISSING_DEPENDENCY, REPO, require, tool_env
from tests.helpers.parity import OPT_OUT, _reference_available  # noqa: F401  (the fixture behind needs_reference)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs(*modules): the test needs these optional packages, which `make test` "
                                       "installs: skipped (and counted) without them, failed with CI=true")


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


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Give torch back the thread count it had before each test. Tests that pin 1 or 2 threads (step neutrality,
    deploy timings) would otherwise change every later test in the process; a convolution's summation order
    depends on the thread count, and the parity tests compare against a reference that ran at 2 threads."""
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    yield
    torch = sys.modules.get("torch")
    if torch is not None and threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
