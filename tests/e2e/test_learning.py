"""A learning-quality floor: the demo recipe, run the way a user runs it (tools/train.py configs/demo.yaml, the
packaged ImageNet EfficientNet-Lite0 backbone), must learn the generated shapes to a real AP50 within a fixed
budget. A broken pipeline (wrong normalisation, anchors, box or target order, a loss that does not reach the
head) still trains with a finite loss, but does not pass this.

The floor comes from measured runs (see FLOOR below); the budget is about 2 minutes on 2 CPU cores.

The learned model is then shipped the way a user ships it (tools/export.py --nms --int8, tools/eval.py on the file):
int8 must keep most of its AP50.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers.env import REPO, tool_env

# Measured with this test's _train (data seed 11) on 2 CPU cores, OMP_NUM_THREADS=1, AMD EPYC (AVX2), 2026-12-07:
# with the demo's lr 0.008 (its default since 2026-12-07) AP50 over seeds 0-5 0.268, 0.267, 0.298, 0.358, 0.242,
# 0.327 (mean 0.293, sd 0.043); with lr 0.004 (the default before) 0.282, 0.230, 0.233, 0.289, 0.289, 0.310 (mean
# 0.272, sd 0.033), the same machine and commit. With lr 0.002, an earlier commit: seeds 0-5 0.220, 0.197, 0.085,
# 0.192, 0.200, 0.173 (mean 0.178, sd 0.048); the same budget from scratch (model.pretrained_backbone=null, a
# pipeline that has not learnt yet) reached 0.050 (seed 0). The floor sits between from-scratch and the test's
# seed, below half of the latter as a margin for other CPUs' kernels (the runs are deterministic on one machine, not
# across machines). At 0.002 one seed in six (seed 2, 0.085) ended below it: 120 steps do not always learn, so the
# floor guards the test's seed, not every seed.
FLOOR_AP50 = 0.10
BUDGET = {"trainer.max_epochs": 10, "data.batch_size": 8, "model.image_size": 192}  # 10 x 12 = 120 optimiser steps


def _train(tmp_path, seed: int, **extra) -> dict:
    """Train with the demo recipe (and ``extra`` overrides); returns ``{"metrics", "data", "run"}``."""
    from effdet.data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", num_train=96, num_val=24, seed=11)
    out = tmp_path / "run"
    overrides = {"data.root": data["root"], "output_dir": out, "seed": seed, "data.num_workers": 1,
                 "trainer.enable_progress_bar": "false", "eval.plots": "false", **BUDGET, **extra}
    command = [sys.executable, str(REPO / "tools" / "train.py"), str(REPO / "configs" / "demo.yaml"),
               *[f"{k}={v}" for k, v in overrides.items()]]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1800, env=tool_env())
    assert completed.returncode == 0, completed.stderr[-4000:]
    return {"metrics": json.loads((out / "metrics.json").read_text()), "data": data, "run": out}


@pytest.fixture(scope="module")
def learned(tmp_path_factory) -> dict:
    return _train(tmp_path_factory.mktemp("learned"), seed=0)


def _run_tool(tool: str, *args) -> str:
    completed = subprocess.run([sys.executable, str(REPO / "tools" / tool), *map(str, args)], cwd=REPO,
                               capture_output=True, text=True, timeout=1800, env=tool_env())
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed.stdout


@pytest.mark.slow
def test_demo_recipe_learns_the_shapes_above_a_measured_ap50_floor(learned):
    metrics = learned["metrics"]
    print(f"AP50 {metrics['AP50']:.3f}  AP {metrics['AP']:.3f}  (floor {FLOOR_AP50})")
    assert metrics["AP50"] >= FLOOR_AP50, (
        f"the demo recipe reached AP50 {metrics['AP50']:.3f} after {BUDGET}, below the floor {FLOOR_AP50} measured "
        "for this budget: training no longer learns as it did")


def _cpu_has_bf16_units() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16; without /proc/cpuinfo, oneDNN says)."""
    from effdet.benchmark.deploy import cpu_flags

    flags = cpu_flags()
    if not flags:
        import torch
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return bool({"avx512_bf16", "amx_bf16"} & flags)


@pytest.mark.slow
@pytest.mark.skipif(not _cpu_has_bf16_units(), reason=(
    "this CPU has no bfloat16 units (AVX2 only): bf16-mixed is emulated there (this test: unfinished after 10 min on "
    "a 2-core AMD EPYC, against 170 s on a CPU with AMX; CI's limit is 90 min for the whole suite), and no user "
    "trains in bf16 on such a CPU (trainer.precision=auto picks 32-true on CPUs). The bf16-mixed step itself is "
    "tested on every CPU (tests/unit/test_training.py::test_mixed_precision_through_trainer_precision)."))
def test_demo_recipe_learns_in_bf16_mixed_too(tmp_path):
    """``trainer.precision=bf16-mixed`` through tools/train.py on the CPU: autocast to bfloat16 (weights, EMA, targets
    and losses float32) must learn as float32 does, above the same floor.

    Measured on 2026-12-06 with this _train (CPU with AMX and AVX512-BF16, 2 threads, seeds 0-2, one run at a time):
    bf16-mixed AP50 0.261, 0.185, 0.210 (mean 0.219, sd 0.039); float32 on the same machine 0.241, 0.099, 0.184
    (mean 0.175, sd 0.071); paired bf16 - float32 +0.020, +0.086, +0.026. bf16 learns at least as well here; three
    seeds cannot say it learns better."""
    run = _train(tmp_path, seed=0, **{"trainer.precision": "bf16-mixed"})
    metrics = run["metrics"]
    print(f"bf16-mixed: AP50 {metrics['AP50']:.3f}  AP {metrics['AP']:.3f}  (floor {FLOOR_AP50})")
    assert "bf16-mixed" in (run["run"] / "config.yaml").read_text()  # it ran in bf16, as asked
    assert metrics["AP50"] >= FLOOR_AP50, f"bf16-mixed reached AP50 {metrics['AP50']:.3f}, below {FLOOR_AP50}"


# Measured on this test's model: on an AVX2 machine, AP50 0.207 fp32 vs 0.200 int8 (onnxruntime quantizer, 7-bit
# weights; full-range weights kept only 0.62x on a seed-1 model); on an AVX-512 VNNI machine fp32 0.211, onnxruntime
# quantizer 0.207, NNCF on OpenVINO 0.204 (0.260 vs fp32 0.252 with OpenVINO limited to AVX2 kernels). On the fully
# trained demo model: README, "Int8".
INT8_KEEPS_AP50 = 0.8


@pytest.fixture(scope="module")
def learned_fp32_file(learned, tmp_path_factory):
    """The learned model exported once with NMS (tools/export.py), for both int8 comparisons."""
    onnx_file = tmp_path_factory.mktemp("fp32") / "fp32.onnx"
    _run_tool("export.py", "--weights", learned["run"] / "checkpoints" / "best.ckpt", "--out", onnx_file, "--nms")
    return onnx_file


@pytest.mark.slow
@pytest.mark.parametrize("quantizer, runtime", [("onnxruntime", "onnxruntime"), ("nncf", "openvino")])
def test_int8_export_of_the_learned_model_keeps_its_ap50(learned, learned_fp32_file, tmp_path, quantizer, runtime):
    data, best = learned["data"], learned["run"] / "checkpoints" / "best.ckpt"
    scores = {}
    int8_file = tmp_path / "int8.onnx"
    _run_tool("export.py", "--weights", best, "--out", int8_file, "--nms", "--int8", "--quantizer", quantizer,
              "--calibration", data["train_images"])
    for name, onnx_file in {"fp32": learned_fp32_file, "int8": int8_file}.items():
        _run_tool("eval.py", "--weights", onnx_file, "--runtime", runtime, "--images", data["val_images"],
                  "--annotations", data["val_annotations"], "--out", tmp_path / name)
        scores[name] = json.loads((tmp_path / name / "metrics.json").read_text())["AP50"]
    print(f"AP50 fp32 {scores['fp32']:.3f}  int8 ({quantizer}, {runtime}) {scores['int8']:.3f}")
    assert abs(scores["fp32"] - learned["metrics"]["AP50"]) < 1e-3  # the fp32 file is the trained model
    assert scores["int8"] >= INT8_KEEPS_AP50 * scores["fp32"], (
        f"int8 AP50 {scores['int8']:.3f} vs fp32 {scores['fp32']:.3f}: quantization loses more than measured")
