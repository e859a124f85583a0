"""One override grammar for every command: `section.key=value`, parsed by effdet.engine.schema.split_overrides.

The parser itself, then each command as a user runs it (a subprocess): tools/train.py, eval.py, infer.py, export.py,
anchor_fit.py (and `python -m effdet.anchor_fit`), benchmark.py convergence; the old forms (`nms=hard`, `--set`,
`--override`) with their deprecation message; `--score-thr` winning over `eval.score_threshold`."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.env import REPO, tool_env
from effdet.modeling.postprocess_settings import PostprocessSettings, postprocess_setting_names
from effdet.engine.schema import (ConfigError, EvalConfig, Override, flag_wins, load_train_config, postprocess_options,
                           split_overrides)
from tests.e2e.test_tools import small_set, untrained_ckpt  # noqa: F401  (module fixtures: 3 demo images, a Lite0 checkpoint)

DEMO = REPO / "configs" / "demo.yaml"
DEPRECATED = "is deprecated (it keeps working until the next release)"


def tool(name: str, *argv, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "tools" / f"{name}.py"), *map(str, argv)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=tool_env())


# ------------------------------------------------------------------------------------------ the parser


def test_an_argument_is_an_override_when_its_key_is_a_config_key():
    overrides, others = split_overrides(["eval.nms=hard", "photo.jpg", "seed=3", "data.train.images=t",
                                         "a=b.jpg", "folder/x=1.png", "trainer.max_epochs=2", "nms=hard"])
    assert overrides == [Override("eval.nms", "hard"), Override("seed", "3"), Override("data.train.images", "t"),
                         Override("trainer.max_epochs", "2")]
    assert others == ["photo.jpg", "a=b.jpg", "folder/x=1.png", "nms=hard"]  # sources and paths, in order
    assert [str(o) for o in overrides[:2]] == ["eval.nms=hard", "seed=3"]


def test_an_old_key_maps_to_its_dotted_key_with_a_deprecation_message(caplog):
    with caplog.at_level(logging.WARNING, logger="effdet.deprecation"):
        overrides, others = split_overrides(["nms=hard", "x.jpg"], renamed={"nms": "eval.nms"})
    assert overrides == [Override("eval.nms", "hard")] and others == ["x.jpg"]
    assert f"'nms=hard' {DEPRECATED}; use 'eval.nms=hard'" in caplog.text


def test_commands_that_run_a_model_take_the_eval_sections_post_processing_keys(caplog):
    options, sources = postprocess_options(["eval.nms=hard", "a.jpg", "eval.max_detections=7"], "effdet-infer",
                                           sources=True)
    assert options == {"nms": "hard", "max_detections": "7"} and sources == ["a.jpg"]
    with caplog.at_level(logging.WARNING, logger="effdet.deprecation"):
        assert postprocess_options(["max_detections=7"], "effdet-eval") == ({"max_detections": "7"}, [])
    assert f"'max_detections=7' {DEPRECATED}; use 'eval.max_detections=7'" in caplog.text
    with pytest.raises(ConfigError, match="effdet-eval takes the post-processing keys.*'data.batch_size' is a "
                                          "training setting"):
        postprocess_options(["data.batch_size=2"], "effdet-eval")
    with pytest.raises(ConfigError, match=r"unknown post-processing option\(s\) \['eval.nmx'\].*'eval.nms'"):
        postprocess_options(["eval.nmx=hard"], "effdet-infer", sources=True)  # a typo is an error, not a SOURCE
    with pytest.raises(ConfigError, match=r"effdet-export: unexpected argument\(s\) \['model.onnx'\]"):
        postprocess_options(["model.onnx"], "effdet-export")


def test_a_dedicated_flag_wins_over_the_override_and_the_log_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="effdet.schema"):
        assert flag_wins({"score_threshold": "0.1"}, "score_threshold", "--score-thr", 0.4) == {"score_threshold": 0.4}
    assert "--score-thr 0.4 and eval.score_threshold=0.1 both given: --score-thr wins" in caplog.text
    caplog.clear()
    assert flag_wins({"score_threshold": "0.1"}, "score_threshold", "--score-thr", None) == {"score_threshold": "0.1"}
    assert flag_wins({}, "score_threshold", "--score-thr", 0.4) == {"score_threshold": 0.4}
    assert caplog.text == ""


def test_train_overrides_are_parsed_by_the_same_function():
    cfg = load_train_config(str(DEMO), ["eval.max_detections=50", "eval.hflip_tta=true", "seed=7"])
    assert (cfg.eval.max_detections, cfg.eval.hflip_tta, cfg.seed) == (50, True, 7)
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['modle.name'\].*'model'"):
        load_train_config(str(DEMO), ["modle.name=efficientdet_d0"])
    with pytest.raises(ConfigError, match=r"must look like section.key=value, got \['efficientdet_d0'\]"):
        load_train_config(str(DEMO), ["efficientdet_d0"])


# ------------------------------------------------------------------------------------------ the settings, once


def test_the_eval_section_is_generated_from_the_post_processing_settings():
    """The schema's eval: section is PostprocessSettings (same keys, types and defaults) plus validation's own keys,
    and the settings' rules check it: one definition, also for a key added later."""
    settings = PostprocessSettings()
    section = EvalConfig()
    assert issubclass(EvalConfig, PostprocessSettings)
    assert {name: getattr(section, name) for name in postprocess_setting_names()} == vars(settings)
    with pytest.raises(ConfigError, match=r"config key 'eval.max_detections' must be >= 1, got 0"):
        load_train_config(str(DEMO), ["eval.max_detections=0"])
    with pytest.raises(ConfigError, match=r"config key 'eval.iou_threshold' must be in \(0, 1\], got 1.5"):
        load_train_config(str(DEMO), ["eval.iou_threshold=1.5"])


# ------------------------------------------------------------------------------------------ each command


@pytest.mark.slow
def test_train_tool_takes_dotted_overrides(tmp_path):
    """tools/train.py CONFIG eval.nms=hard eval.max_detections=5: the run's config and its checkpoint carry them (the
    Predictor reads the checkpoint's eval section); a value the settings' rules refuse fails before training."""
    from effdet import Predictor
    from effdet.data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", num_train=2, num_val=1, width_range=(64, 96), height_range=(64, 96),
                             object_size=(16, 32))
    refused = tool("train", DEMO, "eval.max_detections=0")
    assert refused.returncode == 2 and "config key 'eval.max_detections' must be >= 1" in refused.stderr
    out = tmp_path / "run"
    done = tool("train", DEMO, f"data.root={data['root']}", f"output_dir={out}", "eval.nms=soft",
                "eval.max_detections=5", "eval.plots=false", "trainer.max_epochs=1", "model.image_size=64",
                "model.pretrained_backbone=null", "data.num_workers=0", "data.batch_size=2", "trainer.enable_progress_bar=false",
                timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = load_train_config(str(out / "config.yaml"))
    assert (saved.eval.nms, saved.eval.max_detections) == ("soft", 5)  # demo.yaml says hard
    settings = Predictor.from_checkpoint(out / "checkpoints" / "best.ckpt", device="cpu").settings
    assert (settings.nms, settings.max_detections) == ("soft", 5)


def test_eval_tool_takes_dotted_overrides_and_the_old_form(small_set, untrained_ckpt, tmp_path):  # noqa: F811
    """tools/eval.py ... eval.nms=hard eval.max_detections=50, as tools/train.py takes them; `max_detections=3`, the
    old form, still works and says it is deprecated."""
    def evaluate(name, *overrides):
        done = tool("eval", "--weights", untrained_ckpt, "--images", small_set["val_images"], "--annotations",
                    small_set["val_annotations"], "--out", tmp_path / name, "--workers", 0, *overrides)
        assert done.returncode == 0, done.stderr[-3000:]
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        detections = json.loads((tmp_path / name / "detections.json").read_text())
        per_image = {d["image_id"]: sum(r["image_id"] == d["image_id"] for r in detections) for d in detections}
        return done, metrics["postprocess"], per_image

    done, post, per_image = evaluate("new", "eval.nms=soft", "eval.max_detections=50")
    assert (post["nms"], post["max_detections"]) == ("soft", 50)  # the checkpoint says hard, 100
    assert max(per_image.values()) == 50 and "deprecated" not in done.stderr
    done, post, per_image = evaluate("old", "max_detections=3")
    assert post["max_detections"] == 3 and max(per_image.values()) == 3
    assert f"'max_detections=3' {DEPRECATED}; use 'eval.max_detections=3'" in done.stderr


def test_infer_tool_takes_dotted_overrides_among_its_sources(small_set, untrained_ckpt, tmp_path):  # noqa: F811
    """tools/infer.py IMG ... eval.nms=hard eval.max_detections=2: an argument whose left side is a config key is an
    override, any other is a SOURCE (here a file named `a=b.jpg`). `--set`, the old form, still works and says it
    is deprecated; --score-thr wins over eval.score_threshold and the log says so."""
    images = sorted(Path(small_set["val_images"]).glob("*.jpg"))
    odd = tmp_path / "a=b.jpg"
    shutil.copy(images[1], odd)

    def infer(name, *argv):
        done = tool("infer", images[0], odd, "--weights", untrained_ckpt, "--out", tmp_path / name, *argv)
        assert done.returncode == 0, done.stderr[-3000:]
        return done, json.loads((tmp_path / name / "detections.json").read_text())

    done, records = infer("new", "eval.nms=hard", "eval.max_detections=2", "eval.score_threshold=0")
    assert [Path(r["file"]).name for r in records] == [images[0].name, "a=b.jpg"]
    assert [len(r["scores"]) for r in records] == [2, 2] and "deprecated" not in done.stderr
    done, records = infer("old", "--set", "max_detections=2", "--set", "score_threshold=0")
    assert [len(r["scores"]) for r in records] == [2, 2]
    assert f"--set key=value {DEPRECATED}; use eval.key=value" in done.stderr
    done, records = infer("flag", "--score-thr", "0.5", "eval.score_threshold=0")
    assert "--score-thr 0.5 and eval.score_threshold=0 both given: --score-thr wins" in done.stderr
    assert all(min(r["scores"], default=1.0) >= 0.5 for r in records)
    refused = tool("infer", images[0], "--weights", untrained_ckpt, "--out", tmp_path / "x", "eval.nmx=hard")
    assert refused.returncode == 2 and "unknown post-processing option(s) ['eval.nmx']" in refused.stderr


@pytest.mark.needs("onnx")
def test_export_tool_takes_dotted_overrides_and_the_old_form(tmp_path):
    from effdet.export.metadata import read_metadata

    def export(name, *overrides):
        out = tmp_path / f"{name}.onnx"
        done = tool("export", "--model", "efficientdet_lite0", "--num-classes", 2, "--image-size", 64, "--out", out,
                    "--nms", "--no-check", *overrides)
        assert done.returncode == 0, done.stderr[-3000:]
        return done, read_metadata(out)["postprocess"]

    done, post = export("new", "eval.max_detections=7", "eval.score_threshold=0.2")
    assert (post["max_detections"], post["score_threshold"]) == (7, 0.2) and "deprecated" not in done.stderr
    done, post = export("old", "max_detections=9")
    assert post["max_detections"] == 9
    assert f"'max_detections=9' {DEPRECATED}; use 'eval.max_detections=9'" in done.stderr


def test_anchor_fit_tool_takes_dotted_overrides_and_the_old_module_form(small_set, tmp_path):  # noqa: F811
    """tools/anchor_fit.py CONFIG data.root=... model.anchor_scale=2 (also the console script effdet-anchor-fit);
    `python -m effdet.anchor_fit`, the old form, prints the same report and says it is deprecated."""
    overrides = [f"data.train.images={small_set['val_images']}",
                 f"data.train.annotations={small_set['val_annotations']}", "model.anchor_scale=2"]
    done = tool("anchor_fit", DEMO, *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "anchor fit: " in done.stdout and "anchors 16.0-" in done.stdout  # 2 x stride 8: the override applied
    assert "deprecated" not in done.stderr
    old = subprocess.run([sys.executable, "-m", "effdet.engine.anchor_fit", str(DEMO), *overrides], cwd=REPO,
                         capture_output=True, text=True, timeout=600, env=tool_env())
    assert old.returncode == 0, old.stderr[-3000:]
    assert old.stdout == done.stdout
    assert f"python -m effdet.anchor_fit {DEPRECATED}; use effdet-anchor-fit" in old.stderr
    refused = tool("anchor_fit", DEMO, "model.anchor_scal=2")
    assert refused.returncode == 2 and "unknown config key 'model.anchor_scal'" in refused.stderr
    assert "effdet-anchor-fit=effdet.cli.anchor_fit:main" in (REPO / "setup.py").read_text()


def test_convergence_benchmark_takes_dotted_overrides_and_the_old_form(tmp_path):
    """tools/benchmark.py convergence ... section.key=value: checked as tools/train.py checks them, before any
    dataset is made or training starts; `--override`, the old form, still works and says it is deprecated."""
    def convergence(*argv):
        return tool("benchmark", "convergence", "--data", tmp_path / "none", "--out", tmp_path / "out", *argv)

    bad = convergence("eval.max_detections=5", "model.fpn_chanels=3")
    assert bad.returncode == 2 and "unknown config key 'model.fpn_chanels'" in bad.stderr, bad.stderr[-2000:]
    old = convergence("--override", "model.fpn_chanels=3")
    assert old.returncode == 2 and "unknown config key 'model.fpn_chanels'" in old.stderr
    assert f"--override key=value {DEPRECATED}; use section.key=value arguments" in old.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_convergence_benchmark_trains_with_the_overrides(tmp_path):
    done = tool("benchmark", "convergence", "--kinds", "shapes", "--num-train", 4, "--num-val", 2, "--epochs", 1,
                "--workers", 0, "--out", tmp_path, "model.image_size=64", "model.pretrained_backbone=null",
                "eval.max_detections=7", "data.batch_size=2", "eval.plots=false", timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    saved = load_train_config(str(tmp_path / "shapes" / "ours" / "run" / "config.yaml"))
    assert (saved.eval.max_detections, saved.model.image_size) == (7, 64)
