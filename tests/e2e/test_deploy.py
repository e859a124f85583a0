"""What a user ships: effdet-export on a checkpoint, the torch-free runtime, Predictor runtimes, int8, every
variant exported. Random weights with spread-out scores (tests/unit/test_export.py ``randomized``)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import effdet
from effdet.export.onnx import export_onnx
from effdet.export.metadata import read_metadata
from effdet.inference.predictor import Predictor
from effdet.checkpoint import save_weights
from tests.helpers.env import tool_env  # noqa: E402
from tests.unit.test_export import RUNTIMES, match_detections, randomized  # noqa: E402  (tests/unit/test_export.py)

pytestmark = pytest.mark.needs("onnxruntime")  # skipped and counted without it; fails with CI=true (conftest.py)
REPO = Path(__file__).resolve().parents[2]
NAMES = ["circle", "square", "triangle"]


def photo(height: int, width: int, seed: int) -> np.ndarray:
    """A BGR image with a few filled shapes on a gradient."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = np.linspace(40, 200, width, dtype=np.uint8)[None, :, None]
    for _ in range(5):
        x, y = int(rng.integers(10, width - 30)), int(rng.integers(10, height - 30))
        cv2.rectangle(image, (x, y), (x + int(rng.integers(12, 40)), y + int(rng.integers(12, 40))),
                      tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
    return image


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A Lite0 checkpoint (3 named classes, 128 px) and its with-NMS export made by tools/export.py."""
    torch.set_num_threads(2)
    torch.manual_seed(0)  # create_model's initial weights (randomized redraws only the norms and the heads)
    folder = tmp_path_factory.mktemp("deploy")
    model = randomized(effdet.create_model("efficientdet_lite0", num_classes=3, image_size=[128, 128]), 5)
    checkpoint = save_weights(model, folder / "model.pt", class_names=NAMES, category_ids=[7, 1, 3])
    onnx_file = folder / "model.onnx"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "export.py"), "--weights", str(checkpoint), "--out",
                           str(onnx_file), "--nms", "--dynamic-batch", "eval.max_detections=50"],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "onnxruntime matches PyTorch" in done.stdout
    images = []
    for index, (h, w) in enumerate([(200, 160), (96, 240)]):
        path = folder / f"photo{index}.png"
        cv2.imwrite(str(path), photo(h, w, index))
        images.append(path)
    return {"folder": folder, "checkpoint": checkpoint, "onnx": onnx_file, "images": images}


def torch_predictions(shipped, **overrides):
    predictor = Predictor.from_checkpoint(shipped["checkpoint"], device="cpu", nms="hard", max_detections=50,
                                          **overrides)
    return predictor.predict([str(p) for p in shipped["images"]])


def assert_same(ours, theirs, tolerance: float = 2e-3):
    """Same classes, scores and boxes (original pixels, within ``tolerance`` px)."""
    assert match_detections(ours, theirs) <= tolerance
    assert sorted(ours["names"]) == sorted(theirs["names"])


# Run in the test's subprocess before the runtime is imported: any import of a module that is neither the standard
# library, effdet, nor installed by the `deploy` extra (and what its packages need) fails, as on a machine that
# installed only that extra. torch is not among them.
_DEPLOY_ONLY = r"""
import importlib.metadata as metadata, re, sys

def _dist(requirement):
    return re.split(r"[ <>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")

def _closure(requirements):
    seen, todo = set(), list(requirements)
    while todo:
        requirement = todo.pop()
        name = _dist(requirement)
        if "extra ==" in requirement.partition(";")[2] or name in seen:
            continue
        seen.add(name)
        try:
            todo += metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            pass
    return seen

deploy = [r.partition(";")[0] for r in metadata.requires("effdet-lightning") if 'extra == "deploy"' in r]
dists = _closure(deploy)
allowed = {m for m, owners in metadata.packages_distributions().items()
           if any(o.lower().replace("_", "-") in dists for o in owners)} | {"effdet"} | set(sys.stdlib_module_names)
assert "torch" not in allowed and {"onnxruntime", "numpy", "cv2"} <= allowed, sorted(allowed)

class _DeployOnly:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top not in allowed:
            raise ModuleNotFoundError(f"'{top}' is not installed by effdet-lightning[deploy]", name=name)
        return None

sys.meta_path.insert(0, _DeployOnly())
"""


@pytest.mark.slow
def test_torch_free_runtime_detects_like_pytorch(shipped):
    """The runtime imports and detects with only the deploy extra's packages importable (torch among the blocked),
    and finds what the PyTorch Predictor finds."""
    for ours, theirs in zip(_predict_without_torch(shipped), torch_predictions(shipped)):
        assert_same(ours, theirs)
        assert set(ours["category_ids"]) <= {7, 1, 3}


def _predict_without_torch(shipped, detector_arguments: str = "") -> list[dict]:
    """``OnnxDetector(shipped onnx, <detector_arguments>).predict(shipped images)`` in a process where only the deploy
    extra's packages import (torch blocked), which must not have imported torch; its results as JSON values."""
    code = _DEPLOY_ONLY + (
        "import json\n"
        "from effdet.runtime import OnnxDetector\n"
        f"detector = OnnxDetector({str(shipped['onnx'])!r}{', ' + detector_arguments if detector_arguments else ''})\n"
        f"results = detector.predict({[str(p) for p in shipped['images']]!r})\n"
        "assert not any(name == 'torch' or name.startswith('torch.') for name in sys.modules if sys.modules[name])\n"
        "print(json.dumps([{k: (v.tolist() if hasattr(v, 'tolist') else v) for k, v in r.items()} for r in results]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_runtime_abstraction_imports_without_torch():
    """The runtime classes, their registry, METADATA_KEY and the shared types and deprecation helpers import with only
    the deploy extra's packages (torch blocked); the effdet modules that need torch stay out."""
    code = _DEPLOY_ONLY + (
        "import json\n"
        "from effdet.runtime import METADATA_KEY, ONNX_RUNTIMES, OnnxDetector, check_runtime, session_class\n"
        "from effdet.choices import RUNTIMES\n"
        "classes = {name: session_class(name).__name__ for name in ONNX_RUNTIMES}\n"
        "assert check_runtime('openvino-bf16') == 'openvino-bf16'\n"
        "assert not any(name == 'torch' or name.startswith('torch.') for name in sys.modules if sys.modules[name])\n"
        "print(json.dumps({'key': METADATA_KEY, 'runtimes': list(RUNTIMES), 'classes': classes}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["key"] == "effdet" and found["runtimes"] == ["torch", "onnxruntime", "openvino", "openvino-bf16"]
    assert found["classes"] == {"onnxruntime": "OnnxRuntimeSession", "openvino": "OpenVinoSession",
                                "openvino-bf16": "OpenVinoBf16Session"}


def test_one_runtime_class_per_runtime_and_one_metadata_key():
    """Every runtime of an exported file is one class, found by its name (effdet.choices.RUNTIMES); effdet.export
    writes the key the runtime reads; the old names (effdet.backends, BACKENDS) still work and say they are
    deprecated."""
    import effdet.export
    import effdet.runtime
    from effdet.choices import RUNTIMES
    from effdet.runtime.sessions import InferenceSession, check_runtime, session_class

    assert effdet.runtime.ONNX_RUNTIMES == RUNTIMES[1:] and RUNTIMES[0] == "torch"
    for name in effdet.runtime.ONNX_RUNTIMES:
        assert issubclass(session_class(name), InferenceSession) and session_class(name).runtime == name
    with pytest.raises(ValueError, match=r"unknown runtime 'torch'; valid: \['onnxruntime', 'openvino'"):
        session_class("torch")  # runs the module itself, not a file
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        check_runtime("tensorrt")
    assert effdet.export.METADATA_KEY is effdet.runtime.METADATA_KEY
    with pytest.warns(DeprecationWarning, match="BACKENDS is deprecated"):
        assert effdet.runtime.BACKENDS == effdet.runtime.ONNX_RUNTIMES
    # effdet.backends is now effdet.inference.runtime_network (the module path: tests/unit/test_moved.py); its names
    # keep working and warn
    from effdet.inference import runtime_network as old
    from effdet.inference.runtime_network import RuntimeNetwork, network_for_runtime

    with pytest.warns(DeprecationWarning, match=r"effdet.backends.OnnxBackend is deprecated.*use RuntimeNetwork"):
        assert old.OnnxBackend is RuntimeNetwork
    with pytest.warns(DeprecationWarning, match="effdet.backends.backend_from_model is deprecated"):
        assert old.backend_from_model is network_for_runtime
    with pytest.warns(DeprecationWarning, match="effdet.backends.BACKENDS is deprecated.*effdet.choices.RUNTIMES"):
        assert old.BACKENDS == RUNTIMES
    with pytest.warns(DeprecationWarning, match="effdet.backends.check_backend is deprecated"):
        assert old.check_backend("openvino") == "openvino"


def test_runtime_keyword_and_its_deprecated_name(shipped):
    from effdet.runtime import OnnxDetector

    assert OnnxDetector(shipped["onnx"], runtime="onnxruntime").session.runtime == "onnxruntime"
    with pytest.warns(DeprecationWarning, match=r"OnnxDetector\(backend=...\) is deprecated.*runtime='onnxruntime'"):
        old = OnnxDetector(shipped["onnx"], backend="onnxruntime")
    assert old.session.runtime == "onnxruntime"
    with pytest.warns(DeprecationWarning, match="OnnxRuntimeSession.backend is deprecated"):
        assert old.session.backend == "onnxruntime"
    with pytest.warns(DeprecationWarning, match=r"Predictor.from_onnx\(backend=...\) is deprecated"):
        assert Predictor.from_onnx(shipped["onnx"], backend="onnxruntime").runtime == "onnxruntime"
    with pytest.raises(ValueError, match="not 'torch'"):
        Predictor.from_onnx(shipped["onnx"], runtime="torch")


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("nms", [True, False])
def test_fixed_batch_exports_take_any_number_of_images(shipped, tmp_path, runtime, nms):
    """An export without --dynamic-batch has batch 1; the Predictor (what tools/eval.py and infer use, batch 8 by
    default) runs it one image at a time instead of failing with onnxruntime's 'invalid dimensions'."""
    out = tmp_path / "fixed.onnx"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "export.py"), "--weights", str(shipped["checkpoint"]),
                           "--out", str(out), *(["--nms"] if nms else []), "eval.max_detections=50"],
                          capture_output=True, text=True, timeout=900, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    predictor = Predictor.from_onnx(out, runtime=runtime, **({} if nms else {"nms": "hard", "max_detections": 50}))
    assert predictor.model.session.fixed_batch == 1
    images = [str(p) for p in shipped["images"]] * 2
    together = predictor.predict(images, batch_size=4)
    assert len(together) == 4
    for ours, theirs in zip(together, torch_predictions(shipped) * 2):
        assert_same(ours, theirs)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_predictor_runtimes_match_torch(shipped, runtime):
    expected = torch_predictions(shipped)
    exported = Predictor.from_checkpoint(shipped["checkpoint"], runtime=runtime, nms="hard", max_detections=50)
    assert exported.runtime == runtime and exported.class_names == NAMES
    for ours, theirs in zip(exported.predict([str(p) for p in shipped["images"]]), expected):
        assert_same(ours, theirs)
    graph = Predictor.from_onnx(shipped["onnx"], runtime=runtime)  # NMS inside the graph
    assert graph.category_ids == [7, 1, 3] and graph.image_size == [128, 128]
    for ours, theirs in zip(graph.predict([str(p) for p in shipped["images"]]), expected):
        assert_same(ours, theirs)


def calibration_folder(tmp_path) -> Path:
    """Four photo-like JPEGs to calibrate int8 on."""
    folder = tmp_path / "calibration"
    folder.mkdir()
    for index in range(4):
        cv2.imwrite(str(folder / f"c{index}.jpg"), photo(120, 160, 10 + index))
    return folder


@pytest.mark.slow
def test_int8_quantization_keeps_metadata_and_detects(shipped, tmp_path):
    import onnx

    from effdet.export.quantize import quantize_file
    from effdet.runtime import OnnxDetector

    calibration = calibration_folder(tmp_path)
    target = tmp_path / "int8.onnx"
    report = quantize_file(shipped["onnx"], target, calibration, max_images=3, quantizer="onnxruntime")
    assert report == {"quantizer": "onnxruntime", "format": "QDQ", "images": 3,
                      "float_convs": 2 * 2 * 5 + 1}  # predict convs per level + stem
    model = onnx.load(str(target))
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) > 50 and any(n.op_type == "DequantizeLinear" for n in model.graph.node)
    # 7-bit weights (REDUCE_RANGE): full-range int8 weights saturate in onnxruntime's AVX2 kernels
    assert max(int(np.abs(onnx.numpy_helper.to_array(t).astype(np.int32)).max()) for t in int8_weights) <= 64
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    kept = [n for n in convs if "/predict/" in n.name or "/stem/" in n.name]
    assert len(kept) == 21 and all(n.input[1] not in dequantized for n in kept)  # float32 weights
    assert sum(n.input[1] in dequantized for n in convs) == len(convs) - 21  # every other conv is int8
    assert target.stat().st_size < 0.5 * shipped["onnx"].stat().st_size
    meta = read_metadata(target)
    assert meta["int8"] is True and meta["class_names"] == NAMES and meta["calibration_images"] == 3
    results = OnnxDetector(target).predict([str(p) for p in shipped["images"]])
    assert all(len(r["boxes"]) > 0 and r["boxes"].shape[1] == 4 for r in results)


@pytest.mark.slow
def test_nncf_quantization_keeps_elementwise_ops_in_int8_for_openvino(shipped, tmp_path):
    import onnx

    from effdet.export.quantize import NETWORK_SCOPE, quantize_file
    from effdet.runtime import OnnxDetector

    calibration = calibration_folder(tmp_path)
    target = tmp_path / "int8-nncf.onnx"
    report = quantize_file(shipped["onnx"], target, calibration, max_images=3, quantizer="nncf")
    assert report == {"quantizer": "nncf", "format": "QDQ", "images": 3, "float_convs": 0}
    nodes = onnx.load(str(target)).graph.node
    dequantized = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    reads_int8 = [n for n in nodes if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                  and any(i in dequantized for i in n.input)]
    by_type = {t: sum(n.op_type == t for n in reads_int8) for t in ("Conv", "Add", "MaxPool")}
    # besides the convolutions, the BiFPN's fusions and the residual sums and the downsampling pools take int8
    # inputs: OpenVINO then runs whole blocks in int8 instead of converting around every convolution
    assert by_type["Conv"] > 50 and by_type["Add"] > 5 and by_type["MaxPool"] > 0, by_type
    outside = [n.name for n in reads_int8 if not n.name.startswith(NETWORK_SCOPE) and n.op_type != "Shape"]
    assert outside == []  # decode, top-k and NMS stay float32 (a Shape may read the quantized input: dims only)
    convs = [n for n in nodes if n.op_type == "Conv"]
    assert all(n.input[1] in dequantized for n in convs)  # every convolution has int8 weights, prediction convs too
    meta = read_metadata(target)
    assert meta["int8"] is True and meta["quantizer"] == "nncf" and meta["class_names"] == NAMES
    for runtime in ("openvino", "onnxruntime"):  # placed for OpenVINO, valid for both
        results = OnnxDetector(target, runtime=runtime).predict([str(p) for p in shipped["images"]])
        assert all(len(r["boxes"]) > 0 and r["boxes"].shape[1] == 4 for r in results), runtime


def test_export_cli_errors_are_clear(tmp_path, capsys):
    from effdet.cli.export import main

    with pytest.raises(SystemExit):
        main(["--model", "efficientdet_lite0", "--out", str(tmp_path / "x.onnx"), "--int8"])
    assert "--int8 needs --calibration DIR" in capsys.readouterr().err
    assert main(["--weights", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "missing.ckpt" in capsys.readouterr().err


@pytest.mark.slow
def test_export_of_a_trusted_checkpoint_keeps_classes_ids_and_post_processing(tmp_path):
    """A training checkpoint that needs full unpickling (a Python object among its entries, as older training
    scripts stored hyper-parameters): `tools/export.py --trust-checkpoint` writes the checkpoint's class names,
    category ids and post-processing into the ONNX metadata, as it does for a safe checkpoint; without the flag the
    file is refused."""
    from fractions import Fraction

    from tests.helpers.checkpoints import write_training_checkpoint  # tests/helpers/checkpoints.py

    model = effdet.create_model("efficientdet_lite0", num_classes=3, image_size=[128, 128])
    train_config = {"eval": {"score_threshold": 0.2, "max_detections": 30, "nms": "hard", "iou_threshold": 0.6,
                             "pre_nms_top_k": 900}}
    checkpoint = write_training_checkpoint(tmp_path / "old.ckpt", model, NAMES, [7, 1, 3], ema=model,
                                           train_config=train_config, hyper_parameters={"lr": Fraction(1, 10)})
    out = tmp_path / "trusted.onnx"

    def export(*flags):
        return subprocess.run([sys.executable, str(REPO / "tools" / "export.py"), "--weights", str(checkpoint),
                               "--out", str(out), "--nms", *flags], capture_output=True, text=True, timeout=900,
                              cwd=REPO, env=tool_env())

    refused = export()
    assert refused.returncode == 2 and "trust" in refused.stderr and not out.exists()
    done = export("--trust-checkpoint")
    assert done.returncode == 0, done.stderr[-3000:]
    meta = read_metadata(out)
    assert meta["class_names"] == NAMES and meta["category_ids"] == [7, 1, 3]
    post = meta["postprocess"]
    assert (post["score_threshold"], post["max_detections"], post["iou_threshold"], post["pre_nms_top_k"]) == \
        (0.2, 30, 0.6, 900)


@pytest.mark.needs("openvino")
def test_openvino_runs_float_files_in_float32(tmp_path):
    """OpenVINO would run float graphs in bfloat16 on CPUs with bf16 units (AVX512-BF16, AMX), moving scores by
    ~1e-2; the session asks for float32 (the parity tests failed on such a machine without it)."""
    from effdet.runtime.sessions import open_session

    model = effdet.create_model("efficientdet_lite0", num_classes=2, image_size=[64, 64]).eval()
    export_onnx(model, tmp_path / "raw.onnx", verify=False)
    compiled = open_session(tmp_path / "raw.onnx", "openvino", threads=1)._compiled(1)
    assert "float32" in str(compiled.get_property("INFERENCE_PRECISION_HINT"))  # without the hint: bfloat16 here


@pytest.mark.slow
@pytest.mark.needs("openvino")
def test_openvino_bf16_runtime_is_close_to_float32_or_refuses_clearly(shipped, tmp_path):
    """`openvino-bf16` (runtime, Predictor, tools/infer.py and eval --runtime) runs the float layers in bfloat16 on
    CPUs with bf16 units: raw scores close to float32 but not identical (so bf16 really ran), and about the same top
    score per image through the NMS graph and through the Predictor. Elsewhere it refuses with an error that names
    the float32 runtime. (Which box comes first may change: random heads give near-tied top scores.)"""
    import openvino as ov

    from effdet.runtime import OnnxDetector
    from effdet.runtime.sessions import open_session

    files = [str(p) for p in shipped["images"]]
    if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        with pytest.raises(ValueError, match="no bfloat16 support.*'openvino' runtime"):
            OnnxDetector(shipped["onnx"], runtime="openvino-bf16")
        return
    model = Predictor.from_checkpoint(shipped["checkpoint"], device="cpu").model
    export_onnx(model, tmp_path / "raw.onnx", verify=False)
    feed = {"images": np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)}
    low_session = open_session(tmp_path / "raw.onnx", "openvino-bf16")
    high, low = open_session(tmp_path / "raw.onnx", "openvino").run(feed), low_session.run(feed)
    assert "bfloat16" in str(low_session._compiled(1).get_property("INFERENCE_PRECISION_HINT"))
    levels = len(high) // 2
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))
    score_diff = np.concatenate([np.abs(sigmoid(h) - sigmoid(b)).ravel() for h, b in zip(high[:levels], low[:levels])])
    box_diff = max(float(np.abs(h - b).max()) for h, b in zip(high[levels:], low[levels:]))
    # bf16 keeps 8 bits of mantissa: measured here a mean score change of 4.6e-3-6.4e-3 and a worst of 0.05-0.09
    # among the anchor-class scores (it varies between runs: OpenVINO's bf16 kernels are not bitwise deterministic)
    print(f"bf16 vs f32: score |diff| mean {score_diff.mean():.2e} max {score_diff.max():.3f}; box max {box_diff:.2e}")
    assert 0 < score_diff.mean() < 0.02 and score_diff.max() < 0.2 and box_diff < 0.05
    graph_f32 = OnnxDetector(shipped["onnx"], runtime="openvino").predict(files)
    graph_bf16 = OnnxDetector(shipped["onnx"], runtime="openvino-bf16").predict(files)
    exported = Predictor.from_checkpoint(shipped["checkpoint"], runtime="openvino-bf16", nms="hard",
                                         max_detections=50).predict(files)  # exported on the fly
    graph_threshold = read_metadata(shipped["onnx"])["postprocess"]["score_threshold"]  # all the graph returns
    done = subprocess.run([sys.executable, str(REPO / "tools" / "infer.py"), *files, "--weights", str(shipped["onnx"]),
                           "--runtime", "openvino-bf16", "--score-thr", str(graph_threshold),
                           "--out", str(tmp_path / "infer")],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=tool_env())
    assert done.returncode == 0, done.stderr[-3000:]  # what a user runs: tools/infer.py --runtime openvino-bf16
    from_cli = json.loads((tmp_path / "infer" / "detections.json").read_text())
    pairs = [*zip(graph_f32, graph_bf16), *zip(graph_f32, from_cli), *zip(torch_predictions(shipped), exported)]
    for f32, low in pairs:
        assert len(low["scores"]) > 0
        assert abs(float(np.max(np.asarray(f32["scores"]))) - float(np.max(np.asarray(low["scores"])))) < 0.1


@pytest.mark.slow
def test_infer_on_a_graph_with_nms_keeps_only_scores_above_the_threshold(shipped, tmp_path):
    """tools/infer.py --score-thr on an exported file with NMS inside gives what it gives on the checkpoint (the
    graph returns up to max_detections boxes at the export's own low threshold; infer used to print them all)."""
    def infer(weights, threshold: float, name: str) -> list[dict]:
        done = subprocess.run([sys.executable, str(REPO / "tools" / "infer.py"), *map(str, shipped["images"]),
                               "--weights", str(weights), "--score-thr", str(threshold), "--out", str(tmp_path / name),
                               "eval.nms=hard", "eval.max_detections=50"],
                              capture_output=True, text=True, timeout=600, cwd=REPO, env=tool_env())
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads((tmp_path / name / "detections.json").read_text())

    everything = infer(shipped["checkpoint"], 0.0, "all")
    threshold = float(np.median(everything[0]["scores"]))  # keeps about half of the first image's detections
    from_checkpoint, from_graph = infer(shipped["checkpoint"], threshold, "checkpoint"), infer(shipped["onnx"],
                                                                                                threshold, "graph")
    assert 0 < len(from_checkpoint[0]["scores"]) < len(everything[0]["scores"])
    for ours, theirs in zip(from_graph, from_checkpoint):
        assert len(ours["scores"]) == len(theirs["scores"]) and min(ours["scores"], default=1.0) >= threshold
        assert np.allclose(ours["scores"], theirs["scores"], atol=2e-3)


@pytest.mark.parametrize("override,value", [("nms", "soft"), ("hflip_tta", True), ("iou_threshold", 0.3),
                                            ("pre_nms_top_k", 77), ("score_threshold", 0.0001),
                                            ("max_detections", 51)])
def test_a_graph_with_nms_refuses_overrides_it_cannot_honour(shipped, override, value):
    """The NMS graph was exported with hard NMS and max_detections=50 (the `shipped` fixture) and its other
    settings in the metadata: a different NMS, test-time flips, IoU threshold or pre-NMS top-k, a lower score
    threshold or more detections cannot be applied to it and are refused, naming the file and the graph's value;
    a higher threshold and fewer detections can (they only drop detections)."""
    graph = read_metadata(shipped["onnx"])["postprocess"]
    assert graph["nms"] == "hard" and graph["max_detections"] == 50 and not graph["hflip_tta"]
    with pytest.raises(ValueError) as refused:
        Predictor.from_onnx(shipped["onnx"], **{override: value})
    message = str(refused.value)
    assert str(shipped["onnx"]) in message and f"{override}={graph[override]!r}" in message, message
    tighter = Predictor.from_onnx(shipped["onnx"], score_threshold=graph["score_threshold"] + 0.1, max_detections=5)
    assert (tighter.settings.score_threshold, tighter.settings.max_detections) == (graph["score_threshold"] + 0.1, 5)


def test_infer_refuses_an_override_the_graph_cannot_honour(shipped, tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "tools" / "infer.py"), str(shipped["images"][0]), "--weights",
                           str(shipped["onnx"]), "--out", str(tmp_path / "out"), "eval.nms=soft"],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=tool_env())
    assert done.returncode == 2 and "nms='hard'" in done.stderr and str(shipped["onnx"]) in done.stderr
    assert not (tmp_path / "out" / "detections.json").exists()


def test_runtime_refuses_raw_exports(tmp_path):
    from effdet.runtime import OnnxDetector

    model = effdet.create_model("efficientdet_lite0", num_classes=2, image_size=[64, 64]).eval()
    export_onnx(model, tmp_path / "raw.onnx", verify=False)
    with pytest.raises(ValueError, match="--nms"):
        OnnxDetector(tmp_path / "raw.onnx")


@pytest.mark.slow
@pytest.mark.parametrize("name", effdet.list_models())
def test_every_variant_exports_and_matches_onnxruntime(name, tmp_path):
    """Export at 128 px (D7x: P8 is 1x1) with the built-in onnx.checker + onnxruntime comparison."""
    torch.set_num_threads(2)
    model = effdet.create_model(name, num_classes=3).eval()
    meta = export_onnx(model, tmp_path / f"{name}.onnx", image_size=(128, 128))
    assert meta["max_abs_diff"] is not None and meta["max_abs_diff"] <= 1e-4


def test_benchmark_workers_report_their_own_peak_memory():
    """tools/benchmark.py predict prints a peak-RSS column per path; each path runs in a fresh interpreter whose
    ru_maxrss starts at its parent's peak (Linux keeps it across execve), so it must report VmHWM instead."""
    from effdet.benchmark.workers import peak_rss_mib

    ballast = np.ones(400 * 2**20, np.uint8)  # this process: at least 400 MiB resident
    parent = peak_rss_mib()
    child = subprocess.run([sys.executable, "-c", "from effdet.benchmark.workers import peak_rss_mib; "
                            "print(peak_rss_mib())"], capture_output=True, text=True, check=True, cwd=REPO,
                           env=tool_env())
    del ballast
    assert parent > 400
    assert float(child.stdout) < parent - 300, (child.stdout, parent)


@pytest.mark.slow
def test_deploy_benchmark_runs_the_torch_free_path_and_reports_its_own_memory():
    """`tools/benchmark.py predict --runtime runtime-onnxruntime int8-openvino`, as a user runs it (no reference): it
    prints the CPU's features, and each row (fp32 file; the int8 file it quantized with NNCF) has a latency, a
    batch-8 throughput and the worker's own peak RSS (a torch-free process: far below this torch-loaded test
    process's peak)."""
    from effdet.benchmark.deploy import DESCRIPTIONS
    from effdet.benchmark.workers import peak_rss_mib

    done = subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), "predict", "--runtime",
                           "runtime-onnxruntime", "int8-openvino", "--models", "efficientdet_lite0", "--runs", "2",
                           "--threads", "1"], cwd=REPO, capture_output=True, text=True, timeout=900, env=tool_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"^CPU: .*avx", done.stdout, re.M), done.stdout[:2000]  # the instruction sets int8 speed needs
    for path in ("runtime-onnxruntime", "int8-openvino"):  # the fp32 file and the NNCF int8 file it quantized
        row = next(line for line in done.stdout.splitlines() if line.startswith(f"| {DESCRIPTIONS[path]} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[1].endswith("n=2)") and float(cells[1].split()[0]) > 0  # median latency in ms
        assert float(cells[4]) > 0  # batch-8 images/s
        assert 20 < float(cells[5]) < peak_rss_mib()  # its own peak, not the parent's


# ------------------------------------------------------------------------------------------ sliced inference

SLICING = {"slice_size": 64, "slice_overlap": 0.25, "slice_batch_size": 4, "merge": "nmm", "merge_metric": "ios",
           "merge_threshold": 0.6}


def test_export_writes_the_slicing_keys_and_the_runtime_slices_like_pytorch(shipped, tmp_path):
    """effdet-export ... eval.slice_size=64 eval.max_detections=2000: the metadata carries the slicing keys (and a
    graph that returns up to 2000 detections); the torch-free OnnxDetector then slices large images by itself, in
    batches of slice_batch_size, and finds what the sliced PyTorch Predictor finds; an override turns it off."""
    from effdet.cli.export import main
    from effdet.runtime import OnnxDetector

    out = tmp_path / "sliced.onnx"
    overrides = [f"eval.{key}={value}" for key, value in SLICING.items()]
    assert main(["--weights", str(shipped["checkpoint"]), "--out", str(out), "--nms", "--dynamic-batch",
                 "eval.max_detections=2000", "eval.score_threshold=0.001", "eval.pre_nms_top_k=1000", *overrides]) == 0
    stored = read_metadata(out)["postprocess"]
    assert {key: stored[key] for key in SLICING} == SLICING and stored["max_detections"] == 2000
    detector = OnnxDetector(out)
    assert detector.settings.slice_size == 64
    shapes: list[list[tuple[int, ...]]] = []
    detect_rgb = detector.detect_rgb
    detector.detect_rgb = lambda images: shapes.append([i.shape for i in images]) or detect_rgb(images)
    image = photo(200, 160, 7)
    sliced = detector.predict(image)[0]
    # rows 0, 48, 96, 136 (flush); columns 0, 48, 96 (flush): 12 slices of 64 x 64 in batches of 4
    assert [len(call) for call in shapes] == [4, 4, 4]
    assert all(shape == (64, 64, 3) for call in shapes for shape in call)
    # (the same top-1000 candidates: the graph's top-k is exact up to the number of anchors, 3069 at 128 px)
    torch_sliced = Predictor.from_checkpoint(shipped["checkpoint"], device="cpu", nms="hard", max_detections=2000,
                                             pre_nms_top_k=1000, **SLICING).predict(image)[0]
    assert len(sliced["scores"]) > 100  # more than COCO's 100 come out of the merge
    assert_same(sliced, torch_sliced)
    # the graph itself returns more than 100 detections of one whole image
    whole = OnnxDetector(out, slice_size=None)
    assert whole.settings.slice_size is None and len(whole.predict(photo(128, 128, 3))[0]["scores"]) > 100
    # what the graph fixed cannot be overridden; max_detections only downwards
    with pytest.raises(ValueError, match="iou_threshold"):
        OnnxDetector(out, iou_threshold=0.3)
    with pytest.raises(ValueError, match="max_detections=3000 above"):
        OnnxDetector(out, max_detections=3000)
    assert len(OnnxDetector(out, max_detections=20).predict(image)[0]["scores"]) == 20


def test_torch_free_runtime_slices_without_torch(shipped):
    runtime = _predict_without_torch(shipped, "slice_size=64, merge='nmm'")
    for ours, theirs in zip(runtime, torch_predictions(shipped, slice_size=64, merge="nmm")):
        assert_same(ours, theirs)
