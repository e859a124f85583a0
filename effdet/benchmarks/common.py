"""What every benchmark shares: the subprocess runner, the report formatting, the repository root."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .reference import reference_path

ROOT = Path(__file__).resolve().parents[2]


def run_worker(kind: str, *args, reference: bool = False, threads: int = 2, timeout: int = 1800) -> dict:
    """Run one measurement in a fresh interpreter; the reference gets its own import path."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    if reference:
        path = reference_path()
        if path is None:
            raise RuntimeError("reference package not found: run `make parity-env` or set EFFDET_PARITY_PATH")
        env["PYTHONPATH"] = str(path)  # the reference `effdet` shadows nothing of ours: ours is not on this path
        cwd = tempfile.gettempdir()
    else:
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        cwd = str(ROOT)
    # Load workers.py by file (not as effdet.benchmarks.workers): with the reference on the path, `effdet` is the
    # reference package, and our package must not be imported first.
    code = ("import json, sys, torch, importlib.util; torch.set_num_threads(%d); "
            "spec = importlib.util.spec_from_file_location('effdet_bench_workers', %r); "
            "b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b); "
            "print('@@' + json.dumps(b.WORKERS[%r](*%r)))"
            % (threads, str(Path(__file__).with_name("workers.py")), kind, list(args)))
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker {kind} {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][2:])


def fmt_time(t: dict, unit: float = 1000.0, suffix: str = "ms") -> str:
    return f"{t['median'] * unit:.1f} {suffix} ({t['min'] * unit:.1f}–{t['max'] * unit:.1f}, n={t['runs']})"


__all__ = ["ROOT", "fmt_time", "reference_path", "run_worker"]
