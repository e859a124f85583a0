"""The package layout: no import cycle anywhere in effdet, backbones, heads; `import effdet` has no side effects
(no OpenCV, no Lightning, OpenCV threads untouched); `effdet.__all__` is the public API."""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.helpers.env import REPO, tool_env

PACKAGES = ("effdet", "backbones", "heads")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """Our modules that ``path`` imports (at any depth of the file: function-level imports count too). Importing
    ``a.b.c`` also imports the packages ``a`` and ``a.b``, except the packages that contain ``path`` (they are
    already being imported when it runs)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            parts = target.split(".")
            for depth in range(1, len(parts) + 1):
                candidate = ".".join(parts[:depth])
                if candidate in modules and candidate != name and not name.startswith(candidate + "."):
                    found.add(candidate)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [p for package in PACKAGES for p in (REPO / package).rglob("*.py")]
    modules = {module_name(p) for p in files}
    return {module_name(p): imports_of(p, modules) for p in files}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_is_read_correctly():
    graph = import_graph()
    assert "effdet.checkpoint.load" in graph["effdet.modeling.factory"]
    assert "effdet.modeling.model" in graph["effdet.modeling.factory"]
    assert "effdet.modeling.variants" in graph["effdet.checkpoint.formats"]  # `from ..variants import ...`
    assert "backbones.layers" in graph["backbones.efficientnet"]  # `from .layers import ...`
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_packages():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_installed_packages_import_nothing_that_only_the_checkout_has():
    """The wheel holds effdet, backbones and heads only: none of them may import the checkout's benchmarks/, tools/
    or test helpers (tests/e2e/test_wheel.py runs the installed console scripts)."""
    checkout_only = {"benchmarks", "tools", "tests", "helpers", "conftest", "reference", "checkpoints"}
    found = []
    for path in (p for package in PACKAGES for p in (REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            found += [f"{path.relative_to(REPO)}: {n}" for n in names if n.split(".")[0] in checkout_only]
    assert not found, found


def _in(module: str, rooms: tuple[str, ...]) -> bool:
    return any(module == room or module.startswith(room + ".") for room in rooms)


def import_chain(graph: dict[str, set[str]], start: str, rooms: tuple[str, ...]) -> list[str] | None:
    """The shortest chain of imports from ``start`` to a module of ``rooms`` (``[start, ..., that module]``), else None."""
    previous: dict[str, str] = {start: ""}
    frontier = [start]
    while frontier:
        following = []
        for module in frontier:
            for target in sorted(graph.get(module, ())):
                if target in previous:
                    continue
                previous[target] = module
                if _in(target, rooms):
                    chain = [target]
                    while chain[-1] != start:
                        chain.append(previous[chain[-1]])
                    return chain[::-1]
                following.append(target)
        frontier = following
    return None


TRAINING_SIDE = ("effdet.engine", "effdet.modeling", "effdet.data", "effdet.ops")


def test_training_never_imports_inference_and_modeling_never_imports_the_engine():
    """Follow the data (issue 22): training (engine), the model (modeling), the data pipeline (data) and the box ops
    (ops) never import effdet.inference, directly or through another module, at module or function level; modeling
    and the data pipeline never import the training engine. What both sides use lives below both: pre-processing and drawing boxes in
    effdet.data, the post-processing settings in effdet.modeling; the α·β·γ search, which trains, in effdet.engine."""
    graph = import_graph()
    offenders = [" -> ".join(chain) for module in sorted(graph) if _in(module, TRAINING_SIDE)
                 and (chain := import_chain(graph, module, ("effdet.inference",)))]
    offenders += [" -> ".join(chain) for module in sorted(graph) if _in(module, ("effdet.modeling", "effdet.data"))
                  and (chain := import_chain(graph, module, ("effdet.engine",)))]
    assert offenders == []


def test_the_import_chain_is_found_through_other_modules():
    graph = {"a.x": {"b.y"}, "b.y": {"c.z"}, "c.z": set()}
    assert import_chain(graph, "a.x", ("c",)) == ["a.x", "b.y", "c.z"]
    assert import_chain(graph, "c.z", ("a",)) is None


def test_model_holds_modules_only_and_does_not_import_the_checkpoint_code():
    graph = import_graph()
    assert not {m for m in graph["effdet.modeling.model"] if m.startswith(("effdet.checkpoint", "effdet.modeling.factory"))}


def test_import_effdet_has_no_side_effects_and_exports_its_api():
    code = """
import json, sys
import cv2
threads = cv2.getNumThreads()
del sys.modules["cv2"]
import effdet
print(json.dumps({"cv2": "cv2" in sys.modules, "lightning": "lightning" in sys.modules,
                  "threads_before": threads, "all": sorted(effdet.__all__),
                  "missing": [n for n in effdet.__all__ if getattr(effdet, n, None) is None]}))
import cv2
print(json.dumps({"threads_after": cv2.getNumThreads()}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=tool_env(), cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines()[-2:])
    assert first["cv2"] is False and first["lightning"] is False
    assert first["all"] == ["Classifier", "EfficientDet", "ModelConfig", "Predictor", "classify", "create_model",
                            "list_models", "load_weights", "model_config"]
    assert first["missing"] == []
    assert second["threads_after"] == first["threads_before"]  # OpenCV threads untouched by `import effdet`


@pytest.mark.parametrize("tool", ["train", "eval", "infer", "convert_weights", "make_demo_data", "export", "scale",
                                  "anchor_fit", "check_data", "convert_dataset"])
def test_tools_are_shims_over_the_package_command_lines(tool):
    from importlib import import_module

    text = (REPO / "tools" / f"{tool}.py").read_text(encoding="utf-8")
    assert f"from effdet.cli.{tool} import main" in text and "sys.path" not in text
    assert len(text.splitlines()) <= 10
    assert callable(import_module(f"effdet.cli.{tool}").main)
    setup = (REPO / "setup.py").read_text(encoding="utf-8")
    assert f"effdet-{tool.replace('_', '-')}=effdet.cli.{tool}:main" in setup


def test_benchmark_tool_runs_the_checkout_benchmarks_over_the_package_command_line():
    """tools/benchmark.py runs benchmarks/cli.py (the comparisons, not installed) from the checkout, which adds its
    subcommands to the installed effdet-benchmark's (effdet/cli/benchmark.py) and runs that command line."""
    from benchmarks import cli
    from effdet.cli import benchmark

    text = (REPO / "tools" / "benchmark.py").read_text(encoding="utf-8")
    assert "from benchmarks.cli import main" in text and len(text.splitlines()) <= 12
    assert "effdet-benchmark=effdet.cli.benchmark:main" in (REPO / "setup.py").read_text(encoding="utf-8")
    assert set(benchmark.SUBCOMMANDS) == {"model", "predict", "postprocess", "loader", "scaling"}
    assert set(benchmark.SUBCOMMANDS) < set(cli.SUBCOMMANDS)
    assert all(module.startswith("effdet.benchmark.") for module in benchmark.SUBCOMMANDS.values())
    assert not benchmark.STANDALONE and {"convergence", "slicing", "tiling"} <= set(cli.STANDALONE)
    # every subcommand tools/benchmark.py had before the split, from the checkout alone (no PYTHONPATH, another cwd)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), "--help"], capture_output=True,
                          text=True, env=env, cwd=tempfile.gettempdir(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "{model,train,predict,postprocess,loader,cocoeval,scaling,convergence,slicing,tiling,all}" in done.stdout


def package_files(*excluded: str) -> list[Path]:
    return [p for p in (REPO / "effdet").rglob("*.py") if not p.relative_to(REPO).as_posix().startswith(excluded)]


@pytest.mark.parametrize("definition,where", [
    (r"^PathLike\s*=", "effdet/types.py"),
    (r"^ImageInput\s*=", "effdet/types.py"),
    (r"^METADATA_KEY\s*=", "effdet/runtime/sessions.py"),  # torch-free: the runtime reads it, effdet.export writes it
    (r"^class PostprocessSettings\b", "effdet/modeling/postprocess_settings.py"),
    (r"^def (_coerce|settings_problems|make_postprocess_settings)\b", "effdet/modeling/postprocess_settings.py"),
    (r"^def (load_image|letterbox|normalize)\b", "effdet/data/preprocess.py"),  # training, Predictor and runtime
    (r"^def split_overrides\b", "effdet/engine/schema.py"),  # the one override parser of every command
    (r"^def check_runtime\b", "effdet/runtime/sessions.py"),
    (r"^MIN_BOX_SIZE\s*=", "effdet/data/checks/boxes.py"),  # the dataset and the checker judge boxes alike
])
def test_each_shared_definition_is_made_once(definition, where):
    import re

    pattern = re.compile(definition, re.M)
    found = sorted({p.relative_to(REPO).as_posix() for p in package_files() if pattern.search(p.read_text())})
    assert found == [where]


def test_the_package_imports_its_own_modules_relatively():
    """Inside effdet, its modules import each other with relative imports (`from .x import`), not `from effdet.x`.
    (The top-level benchmarks/ and tools/ import the installed effdet absolutely, and so do the benchmark workers,
    which run loaded by their path in a fresh interpreter, where a relative import has no package.)"""
    import re

    absolute = re.compile(r"^\s*(from effdet[. ]|import effdet\b)", re.M)
    offenders = [p.relative_to(REPO).as_posix() for p in package_files("effdet/benchmark/workers.py", "effdet/benchmark/deploy.py")
                 if absolute.search(p.read_text().split('"""', 2)[-1])]
    assert offenders == []


def test_the_data_module_is_named_for_every_format_and_its_old_name_warns():
    """DetectionDataModule serves COCO, VOC and YOLO data; CocoDataModule, its old name, still imports and warns."""
    import effdet.engine.datamodule as datamodule

    with pytest.warns(DeprecationWarning, match=r"CocoDataModule is deprecated.*DetectionDataModule"):
        from effdet.engine.datamodule import CocoDataModule
    assert CocoDataModule is datamodule.DetectionDataModule


def test_the_package_uses_builtin_generics_not_typing_containers():
    """One style of type hints: dict/list/tuple/set (python >= 3.9), not typing's Dict/List/Tuple/Set; typing keeps
    Optional and Union (their `|` form does not evaluate at run time on 3.9, where OmegaConf reads the schema)."""
    import re

    old = re.compile(r"^from typing import[^\n]*\b(Dict|List|Tuple|Set|FrozenSet)\b", re.M)
    offenders = [str(p.relative_to(REPO)) for folder in ("effdet", "backbones", "heads")
                 for p in (REPO / folder).rglob("*.py") if old.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


@pytest.mark.parametrize("flag", ["--runtime", "--backend"])
def test_benchmark_predict_names_deployment_paths_with_runtime(flag, caplog):
    """effdet-benchmark predict --runtime PATHS (network runtimes are --runtime everywhere); --backend, its old name,
    still works and says it is deprecated."""
    import logging

    from effdet.benchmark import predict
    from effdet.cli.benchmark import build_parser

    parser = build_parser()
    predict.add_arguments(parser)
    args = parser.parse_args(["predict", flag, "runtime-onnxruntime", "int8-openvino"])
    with caplog.at_level(logging.WARNING, logger="effdet.deprecation"):
        assert predict.requested_paths(args) == ["runtime-onnxruntime", "int8-openvino"]
    assert ("--backend is deprecated" in caplog.text) == (flag == "--backend")
    assert predict.runtime_paths(None) == predict.runtime_paths(["all"]) and "torch" in predict.runtime_paths(None)
