"""`tools/benchmark.py convergence --seeds N`, the seed protocol (benchmarks/protocol.py), through the real tools:
two seeds of the three arms and of one variant (ours plus an override), one epoch on a tiny set (the reference arms
need the reference effdet 0.4.1)."""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time

import pytest

from tests.helpers.env import REPO, tool_env
from tests.helpers.parity import needs_reference

ARMS = ("ours", "ours_reference_init", "reference", "filtered")
VARIANT = ("--variant", "filtered", "data.train_resize=random_filtered")
KEYS = {"kind", "arm", "seed", "epochs", "final_AP", "final_AP50", "AP_epoch8", "curve", "seconds", "commit", "dirty",
        "settings"}


def _protocol(out):
    return subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), "convergence", "--seeds", "2",
                           "--epochs", "1", "--kinds", "small", "--sizes", "small=8/4", "--image-size", "128",
                           "--arms", *ARMS, *VARIANT, "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=1800, env=tool_env())


@needs_reference
@pytest.mark.slow
def test_seed_protocol_writes_per_seed_results_a_paired_summary_and_resumes(tmp_path):
    out = tmp_path / "protocol"
    done = _protocol(out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = {}
    for arm in ARMS:
        for seed in (0, 1):
            result = json.loads((out / "small" / arm / f"seed{seed}.json").read_text())
            assert KEYS <= set(result), KEYS - set(result)
            assert (result["kind"], result["arm"], result["seed"], result["epochs"]) == ("small", arm, seed, 1)
            assert result["AP_epoch8"] is None and [r["epoch"] for r in result["curve"]] == [1]
            assert result["final_AP"] == result["curve"][-1]["AP"]
            settings = result["settings"]
            assert (settings["model"], settings["image_size"], settings["seed"]) == ("tf_efficientdet_lite0", 128, seed)
            assert settings["data"] == {"name": "small", "num_train": 8, "num_val": 4, "data_seed": 0}
            results[arm, seed] = result["final_AP"]
    assert "model.weights=INIT" in json.loads((out / "small" / "ours_reference_init" / "seed0.json").read_text())[
        "settings"]["command"]
    for seed in (0, 1):  # the variant trained with its override, and only it
        for arm, mode in (("filtered", "random_filtered"), ("ours", "area")):
            config = (out / "work" / "small" / arm / f"seed{seed}" / "run" / "config.yaml").read_text()
            assert f"train_resize: {mode}" in config, (arm, seed)

    summary = json.loads((out / "summary.json").read_text())["kinds"]["small"]
    for arm in ARMS:
        finals = [results[arm, s] for s in (0, 1)]
        stats = summary["arms"][arm]["final_AP"]
        assert stats["n"] == 2 and math.isclose(stats["mean"], statistics.mean(finals), abs_tol=1e-12)
        assert math.isclose(stats["std"], statistics.stdev(finals), abs_tol=1e-12)
        assert (stats["min"], stats["max"]) == (min(finals), max(finals))
        assert summary["arms"][arm]["AP_epoch8"]["n"] == 0
    for i, a in enumerate(ARMS):
        for b in ARMS[i + 1:]:
            pair = summary["pairs"][f"{a} - {b}"]["final_AP"]
            differences = [results[a, s] - results[b, s] for s in (0, 1)]
            assert pair["seeds"] == [0, 1] and pair["n"] == 2
            assert math.isclose(pair["mean"], statistics.mean(differences), abs_tol=1e-12)
            assert math.isclose(pair["std"], statistics.stdev(differences), abs_tol=1e-12)
            assert pair["exceeds_spread"] == (abs(pair["mean"]) > pair["std"])
    assert "| small | ours - reference | 2 | 0 1 |" in done.stdout

    # a rerun skips every seed whose file exists: nothing is trained or rewritten
    files = sorted(out.glob("small/*/seed*.json")) + sorted(out.glob("work/small/*/seed*/train.log"))
    stamps = [p.stat().st_mtime_ns for p in files]
    started = time.time()
    again = _protocol(out)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "8 already done, 0 to run" in again.stdout
    assert [p.stat().st_mtime_ns for p in files] == stamps
    assert time.time() - started < 120
