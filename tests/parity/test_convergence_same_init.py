"""`convergence --same-init`: ours starts from the reference's initial weights (needs the reference effdet 0.4.1)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from effdet.data.synthetic import make_synthetic_dataset
from tests.helpers.parity import needs_reference


@needs_reference
@pytest.mark.slow
def test_same_init_gives_ours_the_reference_initial_weights(tmp_path):
    """The file `convergence --same-init` hands to tools/train.py (model.weights) loads into our tf_efficientdet_lite0
    with the dataset's classes, and carries the packaged ImageNet backbone the reference starts from."""
    from effdet import create_model
    from benchmarks.convergence import (dataset_paths, reference_folder, reference_initial_weights,
                                               write_reference_spec)
    from effdet.checkpoint import load_pretrained_backbone

    data = make_synthetic_dataset("small", tmp_path / "data", num_train=2, num_val=1, seed=3)
    spec = write_reference_spec(dataset_paths(Path(data["root"])), tmp_path / "run" / "small" / "reference", 1, 0,
                                reference_folder(), 1, 0)
    weights = reference_initial_weights(spec, reference_folder())
    model = create_model("tf_efficientdet_lite0", weights=str(weights))
    assert model.config.num_classes == len(json.load(open(data["val_annotations"]))["categories"])
    imagenet = create_model("tf_efficientdet_lite0", num_classes=1).backbone
    load_pretrained_backbone(imagenet, "efficientnet_lite0")
    for key, value in imagenet.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    bias = [v for k, v in model.state_dict().items() if k.startswith("class_net.predict") and k.endswith("bias")]
    assert bias and all(torch.allclose(b, torch.full_like(b, -math.log(99.0))) for b in bias)  # untrained: the prior


@needs_reference
@pytest.mark.slow
def test_convergence_same_init_cli_trains_ours_from_the_reference_init(tmp_path):
    """`tools/benchmark.py convergence --compare-reference --same-init`, smallest form: both sides train one epoch,
    ours from the weights the reference starts from."""
    import subprocess
    import sys

    from tests.helpers.env import REPO, tool_env

    out = tmp_path / "conv"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), "convergence", "--compare-reference",
                           "--same-init", "--epochs", "1", "--kinds", "shapes", "--num-train", "4", "--num-val", "2",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=1200, env=tool_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ours_log = (out / "shapes" / "ours" / "train.log").read_text()
    init = out / "shapes" / "reference" / "initial_weights.pth"
    assert init.is_file() and f"from {init} into tf_efficientdet_lite0" in ours_log
    result = json.loads((out / "convergence.json").read_text())["results"][0]
    assert len(result["ours"]) == 1 and len(result["reference"]) == 1
