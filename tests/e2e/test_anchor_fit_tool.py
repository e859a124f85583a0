"""The anchor fit as a user runs it: tools/train.py ... data.anchor_fit=apply."""
from __future__ import annotations

import pytest

from effdet.engine.schema import load_train_config
from tests.helpers.datasets import write_small_box_dataset

DEMO = "configs/demo.yaml"


@pytest.mark.slow
def test_train_tool_applies_the_suggested_anchors_to_the_run_and_its_checkpoint(tmp_path):
    """tools/train.py ... data.anchor_fit=apply, as a user runs it: the log says it, config.yaml and the checkpoint
    carry the suggested anchors, and the checkpoint loads back with them."""
    import subprocess
    import sys

    from tests.helpers.env import REPO, tool_env
    from effdet import create_model

    data = write_small_box_dataset(tmp_path / "data")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), str(REPO / DEMO), f"data.root={data}",
                           f"output_dir={out}", "data.anchor_fit=apply", "trainer.max_epochs=1", "model.image_size=256",
                           "data.num_workers=0", "data.batch_size=2", "eval.plots=false",
                           "trainer.enable_progress_bar=false"],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env=tool_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data.anchor_fit=apply: training with the suggested anchors" in done.stdout + done.stderr
    saved = load_train_config(str(out / "config.yaml"))
    assert saved.model.anchor_scale is not None and saved.model.anchor_scale < 3.0
    model = create_model(weights=str(out / "checkpoints" / "best.ckpt"))
    assert model.config.anchor_scale == saved.model.anchor_scale
    assert model.config.aspect_ratios == [list(map(float, a)) for a in saved.model.aspect_ratios]
