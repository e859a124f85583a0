"""``compile: true`` (a run option beside ``channels_last``): the network compiles with ``torch.compile`` without graph
breaks, in training and in evaluation mode, and a run through ``tools/train.py`` trains with it."""
from __future__ import annotations

import json
import re

import pytest
import torch

import effdet
from effdet.engine.schema import load_train_config

from .test_training import ROOT, run_train, tiny_data, tiny_overrides  # noqa: F401  (tiny_data is a fixture)


@pytest.mark.parametrize("name", ["efficientdet_d0", "efficientdet_lite0"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_the_network_compiles_without_graph_breaks(name, training):
    """torch._dynamo.explain traces the forward as torch.compile would; a graph break (data-dependent Python, an
    unsupported call) would split it and cost speed on every step."""
    torch.manual_seed(0)
    model = effdet.create_model(name, image_size=128).train(training).to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 128, 128).contiguous(memory_format=torch.channels_last)
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(model)(images)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_compile_is_a_run_option_outside_the_model_config():
    cfg = load_train_config(str(ROOT / "configs" / "demo.yaml"), ["compile=true"])
    assert cfg.compile is True
    assert "compile" not in cfg.model


@pytest.mark.slow
def test_train_tool_trains_a_compiled_network(tmp_path, tiny_data):  # noqa: F811
    out = tmp_path / "run"
    result = run_train([str(ROOT / "configs" / "demo.yaml"), *tiny_overrides(tiny_data, out), "compile=true"],
                       timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    report = re.search(r"torch\.compile: (\d+) graphs compiled, (\d+) graph breaks", result.stderr + result.stdout)
    assert report, (result.stderr + result.stdout)[-3000:]
    assert int(report.group(1)) >= 1 and int(report.group(2)) == 0
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2  # 8 images / batch 4
    # in-place compile: the checkpoint holds the plain module's keys, loadable by a model that was never compiled
    assert not any("_orig_mod" in key for key in ckpt["state_dict"])
    model = effdet.create_model(weights=out / "checkpoints" / "last.ckpt")
    assert model.config.image_size == (128, 128) or list(model.config.image_size) == [128, 128]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["AP"] <= 1.0
