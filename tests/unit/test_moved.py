"""Issue 22: effdet's modules live in rooms named after their job. Every old module path (effdet._moved's one table)
still imports, gives the new module object and warns once; names that left a module still come from it, with a
warning; old pickles load; and none of our own code uses an old path."""
from __future__ import annotations

import ast
import json
import pickle
import subprocess
import sys

import pytest

from effdet._moved import MOVED_MODULES, MOVED_NAMES, new_location
from tests.helpers.env import REPO, tool_env

# an old package path covers its submodules: effdet.scaling.budget is effdet.modeling.scaling.budget
# (effdet.scaling.search moved on, to effdet.engine.scaling_search: it has an entry of its own in the table)
OLD_SUBMODULES = ["effdet.scaling.budget", "effdet.analysis.confusion", "effdet.analysis.errors",
                  "effdet.analysis.figures"]
assert not set(OLD_SUBMODULES) & set(MOVED_MODULES)  # each path is imported once: its first import warns

_CHECK = r"""
import importlib, json, sys, warnings
import effdet
from effdet._moved import MOVED_MODULES, MOVED_NAMES

def deprecations(caught):
    return [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]

found = {}
for old in json.loads(sys.argv[1]):
    new = MOVED_MODULES.get(old) or importlib.import_module("effdet._moved").new_location(old)
    with warnings.catch_warnings(record=True) as first:
        warnings.simplefilter("always")
        module = importlib.import_module(old)
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        importlib.import_module(old)
        exec(f"import {old}")
    found[old] = {"same": module is importlib.import_module(new), "name": module.__name__,
                  "spec": module.__spec__.name, "first": deprecations(first), "again": deprecations(again),
                  "in_sys_modules": sys.modules.get(old) is module}
names = {}
for module, moved in MOVED_NAMES.items():
    for name, home in moved.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = getattr(importlib.import_module(module), name)
            getattr(importlib.import_module(module), name)
        names[f"{module}.{name}"] = {"same": value is getattr(importlib.import_module(home), name),
                                     "warnings": deprecations(caught)}
print(json.dumps({"modules": found, "names": names}))
"""


@pytest.fixture(scope="module")
def old_paths() -> dict:
    """Every old path imported in one fresh interpreter (the warnings are once per process)."""
    paths = sorted(MOVED_MODULES) + OLD_SUBMODULES
    done = subprocess.run([sys.executable, "-c", _CHECK, json.dumps(paths)], capture_output=True, text=True,
                          env=tool_env(), cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("old", sorted(MOVED_MODULES) + OLD_SUBMODULES)
def test_an_old_module_path_gives_the_new_module_and_warns_once(old_paths, old):
    new = new_location(old)
    found = old_paths["modules"][old]
    assert found["same"] and found["name"] == new and found["spec"] == new  # the module itself, its spec untouched
    assert found["in_sys_modules"]
    assert found["first"] == [f"{old} is deprecated (it keeps working until the next release); use {new}"]
    assert found["again"] == []


@pytest.mark.parametrize("qualified", sorted(f"{m}.{n}" for m, names in MOVED_NAMES.items() for n in names))
def test_a_name_that_left_its_module_still_comes_from_it_and_warns_once(old_paths, qualified):
    found = old_paths["names"][qualified]
    assert found["same"] and len(found["warnings"]) == 1 and qualified in found["warnings"][0]


def test_an_old_path_is_an_error_under_W_error():
    done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", "import effdet.training"],
                          capture_output=True, text=True, env=tool_env(), cwd=REPO, timeout=300)
    assert done.returncode != 0 and "DeprecationWarning: effdet.training is deprecated" in done.stderr
    done = subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c",
                           "import effdet.engine, effdet.modeling.loss, effdet.inference.predictor, effdet.export.onnx"],
                          capture_output=True, text=True, env=tool_env(), cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr  # the new paths never touch an old one


def test_from_an_old_path_import_names():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    from effdet.training import DetectionModule\nexcept DeprecationWarning as w:\n    print(w)\n"
            "warnings.simplefilter('ignore')\n"
            "from effdet.training import DetectionModule, DetectionDataModule\n"
            "from effdet.engine import DetectionModule as new\nassert DetectionModule is new\n"
            "from effdet.loss import DetectionLoss\nfrom effdet.inference import PostprocessSettings, anchors_for\n"
            "from effdet.evaluation import CocoEvaluator, STAT_KEYS, write_json_atomic\n"
            "from effdet.export import export_onnx, read_metadata, compare_detections, freeze_same_padding\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=tool_env(), cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["effdet.training is deprecated (it keeps working until the next release); use "
                                        f"{MOVED_MODULES['effdet.training']}", "ok"]


def test_a_pickle_that_names_an_old_module_path_loads():
    import effdet
    from effdet.engine.schema import load_train_config

    config = effdet.model_config("efficientdet_d0")
    cfg = load_train_config(REPO / "configs" / "demo.yaml", [])
    for value, new, old in [(config, b"effdet.modeling.variants", b"effdet.variants"),
                            (cfg.model, b"effdet.engine.schema", b"effdet.schema")]:
        data = pickle.dumps(value, protocol=0)  # protocol 0: module names are plain lines, so they can be replaced
        assert new in data
        assert pickle.loads(data.replace(new, old)) == value


def test_python_m_an_old_path_runs_the_new_module():
    """``python -m effdet.anchor_fit`` (the old form of effdet-anchor-fit, documented in configs/finetune.yaml) runs
    effdet.engine.anchor_fit, whose relative imports resolve."""
    done = subprocess.run([sys.executable, "-m", "effdet.anchor_fit", "missing.yaml"], capture_output=True, text=True,
                          env=tool_env(), cwd=REPO, timeout=300)
    assert "python -m effdet.anchor_fit is deprecated" in done.stderr
    assert "config file 'missing.yaml' does not exist" in done.stderr and "ImportError" not in done.stderr


# ------------------------------------------------------------------------------------- our code uses new paths

SCANNED = ("effdet", "tests", "tools", "benchmarks")
# these run in the reference's process (only the reference `effdet` 0.4.1 on their path): `effdet.anchors` is its module
REFERENCE_SIDE = {"tests/helpers/reference_runner.py", "benchmarks/reference_train.py"}
ALLOWED = {"tests/unit/test_moved.py"}  # the deprecation test itself


def _old_imports(source: str, rel: str) -> list[str]:
    """The imports of old paths (or of names that left a module) in the file ``rel`` holding ``source``."""
    parts = rel[:-3].split("/")
    package = ".".join(parts[:-1])  # a module's package, or (for __init__.py) the package itself
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            modules = [(base, alias.name) for alias in node.names]
        else:
            continue
        for module, name in modules:
            if new_location(module) or (name and new_location(f"{module}.{name}")):
                found.append(f"{rel}:{node.lineno}: {module}" + (f" import {name}" if name else ""))
            elif name and name in MOVED_NAMES.get(module, {}):
                found.append(f"{rel}:{node.lineno}: {module} import {name} (moved to {MOVED_NAMES[module][name]})")
    return found


def test_no_file_of_ours_imports_an_old_path():
    files = [p for folder in SCANNED for p in (REPO / folder).rglob("*.py")
             if p.relative_to(REPO).as_posix() not in REFERENCE_SIDE | ALLOWED]
    assert len(files) > 100
    offenders = [line for path in files for line in _old_imports(path.read_text(encoding="utf-8"),
                                                                   path.relative_to(REPO).as_posix())]
    assert offenders == []


def test_the_scan_finds_old_imports():
    probe = ("from effdet.loss import DetectionLoss\nimport effdet.scaling.budget\n"
             "from effdet.inference import anchors_for\nfrom effdet import training\nfrom effdet.ops import nms\n")
    assert len(_old_imports(probe, "tests/unit/probe.py")) == 4
    relative = "from ..anchors import BoxCoder\nfrom .anchors import anchors_for\nfrom .. import loss\n"
    assert len(_old_imports(relative, "effdet/modeling/probe.py")) == 2  # effdet.anchors.BoxCoder, effdet.loss
