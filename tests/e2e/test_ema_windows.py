"""benchmarks/ema_windows.py, the diagnostic behind docs/convergence.md part 8: several EMA warm-ups from one run."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_extra_averages_leave_the_run_as_it_is_and_are_scored(tmp_path):
    """20 steps of the demo recipe through tools/train.py's training with two extra averages: the one with the run's
    own warm-up constant (10) scores exactly what the run's own EMA scores (the extras ride on the same updates and
    change nothing), and one whose warm-up keeps it at the latest weights (k = 1e9: d_t < 1e-6) scores what the
    raw weights score (compared detection by detection: 20 steps score about 0 AP); every entry has AP, AP50, AR100."""
    from effdet.data import make_demo_dataset
    from tests.helpers.env import REPO, tool_env

    data = make_demo_dataset(tmp_path / "data", num_train=16, num_val=6)
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.ema_windows", "--warmups", "10", "1e9", "--out", str(out), "--",
         str(REPO / "configs" / "demo.yaml"), f"data.root={data['root']}", f"output_dir={tmp_path / 'run'}",
         "trainer.max_epochs=5", "model.image_size=128", "data.num_workers=0", "data.batch_size=4", "eval.plots=false",
         "optim.ema_warmup=10",
         "trainer.enable_progress_bar=false"],
        cwd=REPO, capture_output=True, text=True, timeout=900, env=tool_env())
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result) == {"own_ema", "raw", "k10", "k1e+09"}
    assert all(set(scores) == {"AP", "AP50", "AR100"} for scores in result.values())
    assert result["k10"] == result["own_ema"]
    # 20 steps score ~0 AP: compare what each set of weights detected (tools/eval.py's detections.json)
    detections = {name: json.loads((tmp_path / "run" / "ema_windows" / name / "detections.json").read_text())
                  for name in ("own", "raw", "k10", "k1e+09")}
    assert detections["k10"] == detections["own"] and len(detections["own"]) > 0
    assert len(detections["k1e+09"]) == len(detections["raw"])
    for a, b in zip(detections["k1e+09"], detections["raw"]):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["score"] == pytest.approx(b["score"], abs=1e-4) and a["bbox"] == pytest.approx(b["bbox"], abs=1e-2)
    assert detections["own"] != detections["raw"]  # the EMA is not the raw weights
