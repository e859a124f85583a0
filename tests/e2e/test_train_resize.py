"""data.train_resize as a user sets it: tools/train.py ... data.train_resize=random_filtered."""
from __future__ import annotations

import subprocess
import sys

import pytest

from effdet.engine.schema import load_train_config


@pytest.mark.slow
def test_train_tool_trains_with_the_filtered_training_resize(tmp_path):
    """One epoch through tools/train.py on generated shapes (image sizes that do not divide evenly: a crop whose
    covered size rounded past the last source pixel made Pillow refuse the region): the run finishes, writes its
    checkpoints and metrics, and config.yaml keeps the setting."""
    from effdet.data.synthetic import make_synthetic_dataset
    from tests.helpers.env import REPO, tool_env

    make_synthetic_dataset("shapes", tmp_path / "data", num_train=8, num_val=4, seed=0)
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), str(REPO / "configs" / "demo.yaml"),
                           f"data.root={tmp_path / 'data'}", f"output_dir={out}", "data.train_resize=random_filtered",
                           "trainer.max_epochs=1", "model.image_size=128", "data.num_workers=0", "eval.plots=false",
                           "trainer.enable_progress_bar=false"],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env=tool_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert load_train_config(str(out / "config.yaml")).data.train_resize == "random_filtered"
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "metrics.json").is_file()
