"""What every benchmark shares: the subprocess runner and the report formatting."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Union

# The folder that holds the `effdet` package this process imported (site-packages for a wheel, the repository for a
# checkout): a worker imports the same one.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]
WORKERS = Path(__file__).with_name("workers.py")


def own_pythonpath() -> str:
    """PYTHONPATH for a worker that must import the same ``effdet`` as this process."""
    return os.pathsep.join([str(PACKAGE_PARENT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])


def run_worker(kind: str, *args, threads: int = 2, timeout: int = 1800, workers: Union[str, Path] = WORKERS,
               pythonpath: Optional[str] = None, cwd: Optional[str] = None) -> dict:
    """Run one measurement, ``WORKERS[kind](*args)`` of the file ``workers``, in a fresh interpreter.

    By default the worker imports the same ``effdet`` as this process; ``pythonpath`` (its whole import path) and
    ``cwd`` run it against another package instead (``tools/benchmark.py``: the reference, also called ``effdet``).
    """
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = own_pythonpath() if pythonpath is None else pythonpath
    # The workers file is loaded by path (not as a module of effdet): with the reference on the path, `effdet` is
    # the reference package, and ours must not be imported first.
    code = ("import json, sys, torch, importlib.util; torch.set_num_threads(%d); "
            "spec = importlib.util.spec_from_file_location('effdet_bench_workers', %r); "
            "b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b); "
            "print('@@' + json.dumps(b.WORKERS[%r](*%r)))"
            % (threads, str(workers), kind, list(args)))
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, cwd=cwd or str(PACKAGE_PARENT),
                          capture_output=True, text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker {kind} {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][2:])


def fmt_time(t: dict, unit: float = 1000.0, suffix: str = "ms") -> str:
    return f"{t['median'] * unit:.1f} {suffix} ({t['min'] * unit:.1f}–{t['max'] * unit:.1f}, n={t['runs']})"


__all__ = ["PACKAGE_PARENT", "WORKERS", "fmt_time", "own_pythonpath", "run_worker"]
