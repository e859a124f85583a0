"""The wheel works on its own: built from this checkout, installed into a fresh virtual environment and run from a
folder outside the checkout, every console script it declares answers --help and ``effdet-benchmark model`` runs.

The heavy dependencies (torch, lightning, OpenCV, ...) are not installed again: the new environment sees the
site-packages of the interpreter running the tests through a ``.pth`` file, added after ``pip install --no-deps``
(so pip sees no effdet-lightning already installed there). Folders a ``.pth`` file adds are not site folders, so an
editable install of this project in those site-packages (its own ``.pth`` finder) stays inactive: ``effdet`` can
only come from the wheel, and the test checks that it does.
"""
from __future__ import annotations

import configparser
import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _checkout_copy(target: Path) -> Path:
    """The files of the checkout as git sees them (tracked, and untracked but not ignored) copied to ``target``:
    the wheel is built from them without writing build/ or *.egg-info into the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=True)
    for name in listed.stdout.decode().split("\0"):
        source = REPO / name
        if name and source.is_file():  # a tracked file deleted in the working tree is not part of it
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1", **extra)
    return env


def _run(command: list, cwd: Path, timeout: int = 600, **extra: str) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=_clean_env(**extra))
    assert done.returncode == 0, f"{command} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


def _console_scripts(wheel: Path) -> dict[str, str]:
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt"))
        parser = configparser.ConfigParser()
        parser.read_string(archive.read(name).decode())
    return dict(parser["console_scripts"])


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> dict:
    """This checkout built as a wheel and installed, without dependencies, into a fresh virtual environment."""
    root = tmp_path_factory.mktemp("wheel")
    source = _checkout_copy(root / "source")
    # Without build isolation where setuptools is at hand: no download, so it works offline.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *isolation, ".", "-w", root / "dist"], source)
    wheel = next((root / "dist").glob("effdet_lightning-*.whl"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", venv], root)
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], root)
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        root).stdout.strip())
    dependencies = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
    (purelib / "_effdet_test_dependencies.pth").write_text("\n".join(dependencies) + "\n")
    elsewhere = root / "elsewhere"  # the working folder of every command: not the checkout
    elsewhere.mkdir()
    return {"wheel": wheel, "venv": venv, "python": python, "purelib": purelib, "cwd": elsewhere}


def test_the_wheel_holds_the_library_only(installed_wheel):
    with zipfile.ZipFile(installed_wheel["wheel"]) as archive:
        top = {name.split("/")[0] for name in archive.namelist()}
    assert {"effdet", "backbones", "heads"} <= top
    assert not top & {"benchmarks", "tests", "tools", "configs"}, top  # checkout-only code stays out
    assert "effdet/benchmark/workers.py" in archive.namelist() and "effdet/cli/benchmark.py" in archive.namelist()


def test_the_installed_package_is_the_wheel_not_the_checkout(installed_wheel):
    done = _run([installed_wheel["python"], "-c",
                 "import importlib.util, effdet, backbones; print(effdet.__file__); print(backbones.__file__); "
                 "print(importlib.util.find_spec('benchmarks'))"], installed_wheel["cwd"])
    effdet_file, backbones_file, benchmarks_spec = done.stdout.split("\n")[-4:-1]
    assert Path(effdet_file).is_relative_to(installed_wheel["purelib"]), effdet_file
    assert Path(backbones_file).is_relative_to(installed_wheel["purelib"]), backbones_file
    assert benchmarks_spec == "None"  # the checkout's benchmarks/ is not installed, nor importable here


def test_every_console_script_of_the_wheel_answers_help(installed_wheel):
    scripts = _console_scripts(installed_wheel["wheel"])
    assert "effdet-benchmark" in scripts and "effdet-train" in scripts
    for script in sorted(scripts):
        executable = installed_wheel["venv"] / "bin" / script
        assert executable.is_file(), f"the wheel declares {script}, pip did not install it"
        done = _run([executable, "--help"], installed_wheel["cwd"], timeout=300)
        assert "usage:" in done.stdout, f"{script} --help:\n{done.stdout[:1000]}"


def test_effdet_benchmark_model_runs_from_the_wheel(installed_wheel):
    """`effdet-benchmark model` measures in a worker subprocess, which must import the same (installed) effdet."""
    done = _run([installed_wheel["venv"] / "bin" / "effdet-benchmark", "model", "--variants", "efficientdet_d0",
                 "--runs", "1", "--threads", "1"], installed_wheel["cwd"])
    row = next(line for line in done.stdout.splitlines() if line.startswith("| efficientdet_d0 |"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "512×512" and 3.5 < float(cells[2]) < 4.5  # input, parameters (M)
    assert cells[6].endswith("n=1)")  # latency of one run
