"""tools/check_data.py with the model's settings (--config, or --image-size alone): it warns when most objects are too
small for the smallest anchor at the input (and suggests data.tile_size / eval.slice_size), and when images hold more
objects than eval.max_detections (and suggests the value that fits); both stay quiet on ordinary data.

The expected numbers are computed here from the annotation JSON, not with the checker's code: an object is a
non-crowd COCO box ``[x, y, w, h]``, its size ``sqrt(w * h)``; letterboxing an image of ``H x W`` into the input scales
it by ``min(S_h / H, S_w / W)``; the smallest anchor of a model is ``anchor_scale * 2**min_level`` input px, and an
object below that side / sqrt(2) cannot reach IoU 0.5 with it.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import statistics
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from effdet.cli.check_data import main as check_data_main
from tests.helpers.env import REPO, tool_env

CONFIG = str(REPO / "configs" / "demo.yaml")  # EfficientDet-Lite0 at 256 px: smallest anchor 3.0 * 2**3 = 24 px
DEMO_INPUT, DEMO_ANCHOR = 256, 3.0 * 2 ** 3
D0_ANCHOR = 4.0 * 2 ** 3  # EfficientDet-D0, the anchors of --image-size without a config
SCALE_CODE, LIMIT_CODE = "objects_below_anchor", "objects_over_max_detections"


def run(argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = check_data_main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def findings(report_path: Path) -> dict[str, dict]:
    report = json.loads(report_path.read_text())
    return {f["code"]: f for f in report["findings"] if f["code"] in (SCALE_CODE, LIMIT_CODE)}


@pytest.fixture(scope="module")
def aerial(tmp_path_factory) -> dict:
    from effdet.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset("aerial", tmp_path_factory.mktemp("aerial"), num_train=2, num_val=1, seed=0)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict:
    from effdet.data.synthetic import make_synthetic_dataset

    return make_synthetic_dataset("shapes", tmp_path_factory.mktemp("shapes"), num_train=24, num_val=4, seed=0)


def expected_numbers(annotations: str, input_side: int, anchor: float) -> dict:
    """The numbers the warnings must state, from the JSON alone."""
    coco = json.loads(Path(annotations).read_text())
    size_of = {image["id"]: (image["height"], image["width"]) for image in coco["images"]}
    objects = [a for a in coco["annotations"] if not a.get("iscrowd") and a["bbox"][2] > 0 and a["bbox"][3] > 0]
    source = [math.sqrt(a["bbox"][2] * a["bbox"][3]) for a in objects]
    at_input = [side * min(input_side / size_of[a["image_id"]][0], input_side / size_of[a["image_id"]][1])
                for side, a in zip(source, objects)]
    least = anchor / math.sqrt(2)
    per_image = Counter(a["image_id"] for a in objects)
    median_source = statistics.median(source)
    return {"objects": len(objects), "below": sum(side < least for side in at_input), "least": least,
            "median_source": median_source, "median_input": statistics.median(at_input),
            # the tile whose letterbox scale takes the median object to the anchor, a multiple of 32, >= the input
            "tile": max(input_side, int(input_side * median_source / anchor // 32) * 32),
            "per_image": per_image, "largest": max(per_image.values())}


def test_aerial_scenes_at_256_px_warn_with_the_numbers_and_the_settings_that_fit(aerial, tmp_path):
    """As a user runs it: the config's training split, its model (Lite0, 256 px) and eval.max_detections (100)."""
    report_path = tmp_path / "report.json"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "check_data.py"), "--config", CONFIG,
                           f"data.root={aerial['root']}", "--level", "fast", "--json", str(report_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=tool_env())
    assert done.returncode == 0, done.stdout + done.stderr  # warnings: the data can train
    expect = expected_numbers(aerial["train_annotations"], DEMO_INPUT, DEMO_ANCHOR)
    found = findings(report_path)
    assert set(found) == {SCALE_CODE, LIMIT_CODE}, done.stdout
    assert all(f["severity"] == "warning" for f in found.values())

    scale = found[SCALE_CODE]
    detail = scale["detail"]
    assert 2 * expect["below"] > expect["objects"]  # the premise: most objects shrink below 17 px whole
    assert detail["objects"] == expect["objects"] and detail["below_smallest_object"] == expect["below"]
    assert detail["smallest_anchor"] == pytest.approx(DEMO_ANCHOR)
    assert detail["median_source_side"] == pytest.approx(expect["median_source"], abs=0.01)
    assert detail["median_input_side"] == pytest.approx(expect["median_input"], abs=0.01)
    assert detail["suggested_tile_size"] == expect["tile"] and expect["tile"] % 32 == 0
    assert detail["tiles_fit"] is True
    for number in (f"{expect['below']} of {expect['objects']} objects", f"{expect['least']:.1f} px",
                   f"smallest anchor ({DEMO_ANCHOR:g} px)", f"median object {expect['median_source']:.1f} px in the "
                   f"source, {expect['median_input']:.1f} px at the input",
                   f"data.tile_size={expect['tile']} eval.slice_size={expect['tile']}"):
        assert number in scale["message"], (number, scale["message"])

    limit = found[LIMIT_CODE]
    over = {image_id for image_id, count in expect["per_image"].items() if count > 100}
    suggested = math.ceil(expect["largest"] / 100) * 100
    assert limit["detail"]["images_over"] == len(over) and limit["detail"]["largest_count"] == expect["largest"]
    assert limit["detail"]["suggested_max_detections"] == suggested
    assert limit["image_id"] == max(expect["per_image"], key=expect["per_image"].get)
    assert f"{len(over)} of 2 images" in limit["message"]
    assert f"the most: {expect['largest']} objects" in limit["message"]
    assert f"eval.max_detections={suggested}" in limit["message"]

    line = f"data.tile_size={expect['tile']} eval.slice_size={expect['tile']} eval.max_detections={suggested}"
    assert line in done.stdout, done.stdout  # the override line to copy
    assert json.loads(report_path.read_text())["suggested_overrides"] == {
        "data.tile_size": expect["tile"], "eval.slice_size": expect["tile"], "eval.max_detections": suggested}


def test_the_suggested_settings_silence_both_warnings(aerial, tmp_path):
    first = tmp_path / "first.json"
    code, _, err = run(["--config", CONFIG, f"data.root={aerial['root']}", "--level", "fast", "--json", first])
    assert code == 0, err
    suggested = json.loads(first.read_text())["suggested_overrides"]
    assert set(suggested) == {"data.tile_size", "eval.slice_size", "eval.max_detections"}
    second = tmp_path / "second.json"
    code, text, err = run(["--config", CONFIG, f"data.root={aerial['root']}", "--level", "fast", "--json", second,
                           *(f"{key}={value}" for key, value in suggested.items())])
    assert code == 0, err
    assert findings(second) == {}, text
    assert f"tiles of {suggested['data.tile_size']} px" in text  # the report says what it compared with


def test_a_tile_size_too_large_still_warns_measuring_the_tiles(aerial, tmp_path):
    """With tiles on, the objects are measured as the tiles present them (tile_coco): 1024 px tiles at 256 px still
    shrink them 4x; the warning names the configured tile and suggests the smaller one."""
    report_path = tmp_path / "report.json"
    code, _, err = run(["--config", CONFIG, f"data.root={aerial['root']}", "data.tile_size=1024", "--level", "fast",
                        "--json", report_path])
    assert code == 0, err
    scale = findings(report_path)[SCALE_CODE]
    expect = expected_numbers(aerial["train_annotations"], DEMO_INPUT, DEMO_ANCHOR)
    assert scale["detail"]["tile_size"] == 1024 and "data.tile_size=1024" in scale["message"]
    assert scale["detail"]["suggested_tile_size"] == expect["tile"]
    assert scale["detail"]["median_input_side"] < expect["least"]  # about a quarter of the source size


def test_ordinary_data_warns_neither(shapes, tmp_path):
    for argv in (["--config", CONFIG, f"data.root={shapes['root']}"],
                 ["--images", shapes["train_images"], "--annotations", shapes["train_annotations"],
                  "--image-size", 512]):
        report_path = tmp_path / "report.json"
        code, text, err = run([*argv, "--level", "fast", "--json", report_path])
        assert code == 0, err
        assert findings(report_path) == {}, text
        assert "model view: input" in text and "suggested settings" not in text


def test_the_image_size_shortcut_needs_no_config(aerial, tmp_path):
    report_path = tmp_path / "report.json"
    code, text, err = run(["--images", aerial["train_images"], "--annotations", aerial["train_annotations"],
                           "--image-size", 384, "--level", "fast", "--json", report_path])
    assert code == 0, err
    expect = expected_numbers(aerial["train_annotations"], 384, D0_ANCHOR)
    scale = findings(report_path)[SCALE_CODE]
    assert scale["detail"]["input_size"] == [384, 384] and scale["detail"]["smallest_anchor"] == D0_ANCHOR
    assert scale["detail"]["below_smallest_object"] == expect["below"]
    assert scale["detail"]["suggested_tile_size"] == expect["tile"] >= 384
    assert "input 384x384 px, smallest anchor 32 px" in text
    assert LIMIT_CODE in findings(report_path)  # eval.max_detections' default, 100


def test_config_mistakes_are_usage_errors_naming_the_key(aerial):
    for argv, words in (
            (["--config", CONFIG, f"data.root={aerial['root']}", "data.tile_sise=256"],
             ["data.tile_sise", "tile_size"]),
            (["--config", CONFIG, f"data.root={aerial['root']}", "eval.max_detections=0"], ["eval.max_detections"]),
            (["--config", CONFIG, f"data.root={aerial['root']}", "--image-size", 512], ["model.image_size=N"]),
            (["--images", aerial["train_images"], "--annotations", aerial["train_annotations"], "data.tile_size=256"],
             ["need --config"]),
            (["--config", str(REPO / "configs" / "nope.yaml")], ["nope.yaml", "does not exist"])):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as stopped:
            check_data_main([str(a) for a in argv])
        assert stopped.value.code == 2, argv
        assert all(word in err.getvalue() for word in words), (words, err.getvalue())


def test_yolo_data_of_a_config_is_converted_as_training_converts_it(aerial, tmp_path):
    from effdet.data.yolo import coco_to_yolo

    root = tmp_path / "yolo"
    for split in ("train", "val"):
        shutil.copytree(aerial[f"{split}_images"], root / "images" / split)
        coco_to_yolo(json.loads(Path(aerial[f"{split}_annotations"]).read_text()), root / "labels" / split)
    report_path = tmp_path / "report.json"
    yolo = [f"data.root={root}", "data.format=yolo", "data.train.images=images/train",
            "data.train.annotations=labels/train", "data.val.images=images/val", "data.val.annotations=labels/val",
            "data.classes=labels/train/classes.txt"]
    code, text, err = run(["--config", CONFIG, *yolo, "--level", "fast", "--json", report_path])
    assert code == 0, err + text
    expect = expected_numbers(aerial["train_annotations"], DEMO_INPUT, DEMO_ANCHOR)
    found = findings(report_path)
    assert found[LIMIT_CODE]["detail"]["largest_count"] == expect["largest"]
    assert found[SCALE_CODE]["detail"]["objects"] == expect["objects"]
    with pytest.raises(SystemExit) as stopped:  # --fix writes COCO JSON: not from converted data
        run(["--config", CONFIG, *yolo, "--fix", tmp_path / "out.json"])
    assert stopped.value.code == 2


def test_the_detection_limit_rounds_up_to_the_next_hundred_and_the_anchor_formula_is_shared():
    from effdet.data.checks import DataReport
    from effdet.data.model_checks import ModelView, check_detection_limit, objects_coco
    from effdet.engine import anchor_fit
    from effdet.modeling import anchors

    def limit_detail(counts: list[int], max_detections: int = 100):
        coco = {"images": [{"id": k, "file_name": f"{k}.jpg", "width": 1000, "height": 1000}
                           for k in range(len(counts))],
                "annotations": [{"id": 1000 * k + n, "image_id": k, "category_id": 1, "bbox": [n, n, 10, 10],
                                 "iscrowd": 0} for k, count in enumerate(counts) for n in range(count)],
                "categories": [{"id": 1, "name": "a"}]}
        coco["annotations"].append({"id": 0, "image_id": 0, "category_id": 1, "bbox": [0, 0, 50, 50], "iscrowd": 1})
        view = ModelView((512, 512), 32.0, None, max_detections)
        return check_detection_limit(DataReport("a.json", "imgs", "fast"), objects_coco(coco), view)

    assert limit_detail([100, 40]) is None  # 100 objects (and a crowd region) fit 100 detections
    assert limit_detail([101, 40])["suggested_max_detections"] == 200
    assert limit_detail([300, 250, 7])["suggested_max_detections"] == 300
    assert limit_detail([300, 250, 7])["images_over"] == 2
    assert anchors.smallest_anchor_side(3, 3.0) == 24.0 and anchors.smallest_anchor_side(2, 4.0) == 16.0
    assert anchor_fit.anchor_size_range is anchors.anchor_size_range  # one formula, one place
