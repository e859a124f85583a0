"""tools/check_data.py and effdet.data.checks: planted defects are named, --fix cleans a copy, --draw renders."""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from effdet.cli.check_data import main as check_data_main
from effdet.data import CocoDetection
from effdet.data.checks import check_dataset, fix_dataset, preflight, DataCheckError

REPO = Path(__file__).resolve().parents[2]


def run(argv) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = check_data_main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def clean_set(tmp_path_factory) -> dict:
    from effdet.data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("clean"), num_train=0, num_val=8, width_range=(96, 160),
                             height_range=(64, 128), object_size=(16, 48), empty_fraction=0.0)


def planted_copy(clean_set: dict, folder: Path) -> dict:
    """A copy of the clean set with one of each acceptance defect; returns paths and the planted ids."""
    images = folder / "images"
    shutil.copytree(clean_set["val_images"], images)
    data = json.loads(Path(clean_set["val_annotations"]).read_text())
    entries = data["images"]
    (images / entries[0]["file_name"]).unlink()                        # 1. a missing file
    corrupt = images / entries[1]["file_name"]
    corrupt.write_bytes(corrupt.read_bytes()[: len(corrupt.read_bytes()) // 2])  # 2. a truncated JPEG
    anns = [a for a in data["annotations"] if a["image_id"] not in (entries[0]["id"], entries[1]["id"])]
    anns[0]["bbox"][2] = -5.0                                          # 3. a negative width
    anns[1]["category_id"] = 99                                        # 4. an unknown category id
    next_id = max(a["id"] for a in data["annotations"]) + 1
    orphan = {"id": next_id, "image_id": 9999, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 0}
    target = entries[2]
    width, height = target["width"], target["height"]
    x1, y1, x2, y2 = round(0.6 * width), round(0.3 * height), round(0.85 * width), round(0.6 * height)
    xyxy = {"id": next_id + 1, "image_id": target["id"], "category_id": 3, "bbox": [x1, y1, x2, y2], "iscrowd": 0}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in (entries[0]["id"], entries[1]["id"])]
    data["annotations"] += anns + [orphan, xyxy]                       # 5. orphan, 6. written as xyxy
    json_path = folder / "instances.json"
    json_path.write_text(json.dumps(data))
    return {"images": images, "json": json_path, "missing": entries[0], "corrupt": entries[1],
            "negative": anns[0]["id"], "unknown": anns[1]["id"], "orphan": orphan["id"], "xyxy": xyxy["id"],
            "xyxy_box": [x1, y1, x2 - x1, y2 - y1]}


def test_clean_demo_data_can_train(clean_set):
    report = check_dataset(clean_set["val_images"], clean_set["val_annotations"])
    assert report.can_train and report.exit_code == 0
    assert not report.of("fatal", "error", "warning")
    balance = {row["name"]: row["boxes"] for row in report.stats["class_balance"]}
    data = json.loads(Path(clean_set["val_annotations"]).read_text())
    assert sum(balance.values()) == len(data["annotations"])
    sizes = report.stats["box_sizes"]
    assert sizes["small"] + sizes["medium"] + sizes["large"] == sizes["total"] == len(data["annotations"])


def test_every_planted_defect_is_named_and_the_exit_code_says_it_cannot_train(clean_set, tmp_path):
    planted = planted_copy(clean_set, tmp_path)
    original = planted["json"].read_bytes()
    code, out, _ = run(["--images", planted["images"], "--annotations", planted["json"]])
    assert code == 1
    lines = out.splitlines()

    def line_with(*parts) -> str:
        found = [line for line in lines if all(str(p) in line for p in parts)]
        assert found, f"no report line with {parts}:\n{out}"
        return found[0]

    line_with("[missing_file]", f"image id {planted['missing']['id']}", planted["missing"]["file_name"])
    line_with("[unreadable_image]", planted["corrupt"]["file_name"], "truncated")
    line_with("[box_nonpositive]", f"annotation id {planted['negative']}", "width -5")
    line_with("[unknown_category]", f"annotation id {planted['unknown']}", "category_id 99")
    line_with("[orphan_annotation]", f"annotation id {planted['orphan']}", "image_id 9999")
    line_with("[box_xyxy]", f"annotation id {planted['xyxy']}", "xyxy")
    assert "verdict: CANNOT train" in out
    assert "class balance" in out and "COCO buckets" in out
    assert planted["json"].read_bytes() == original  # the check never writes


def test_fix_writes_a_cleaned_copy_lists_every_change_and_the_copy_trains(clean_set, tmp_path):
    planted = planted_copy(clean_set, tmp_path)
    digest = hashlib.sha256(planted["json"].read_bytes()).hexdigest()
    fixed = tmp_path / "fixed.json"
    code, out, _ = run(["--images", planted["images"], "--annotations", planted["json"], "--fix", fixed])
    assert code == 0, out
    assert hashlib.sha256(planted["json"].read_bytes()).hexdigest() == digest  # original untouched
    changes = (tmp_path / "fixed.json.changes.txt").read_text().splitlines()
    assert any(f"image id {planted['missing']['id']}" in c and "missing_file" in c for c in changes)
    assert any(f"image id {planted['corrupt']['id']}" in c and "unreadable_image" in c for c in changes)
    assert any(f"annotation id {planted['negative']}" in c and "box_nonpositive" in c for c in changes)
    assert any(f"annotation id {planted['unknown']}" in c and "unknown category_id 99" in c for c in changes)
    assert any(f"annotation id {planted['orphan']}" in c and "9999" in c for c in changes)
    assert any(f"annotation id {planted['xyxy']}" in c and "box_xyxy" in c for c in changes)
    assert "the cleaned copy can train" in out
    cleaned = json.loads(fixed.read_text())
    by_id = {a["id"]: a for a in cleaned["annotations"]}
    assert by_id[planted["xyxy"]]["bbox"] == pytest.approx(planted["xyxy_box"])
    assert not {planted["negative"], planted["unknown"], planted["orphan"]} & set(by_id)
    assert not {planted["missing"]["id"], planted["corrupt"]["id"]} & {i["id"] for i in cleaned["images"]}
    assert check_dataset(planted["images"], fixed).can_train
    dataset = CocoDetection(planted["images"], fixed)  # what training builds; loads every image
    assert len(dataset) == len(cleaned["images"]) and all(dataset[i]["image"].shape[2] == 3 for i in range(len(dataset)))


@pytest.mark.slow
def test_fixed_copy_trains_with_train_py(clean_set, tmp_path):
    planted = planted_copy(clean_set, tmp_path)
    fixed = tmp_path / "fixed.json"
    assert run(["--images", planted["images"], "--annotations", planted["json"], "--fix", fixed])[0] == 0
    command = [sys.executable, str(REPO / "tools" / "train.py"), str(REPO / "configs" / "demo.yaml"),
               f"data.train.images={planted['images']}", f"data.train.annotations={fixed}",
               f"data.val.images={planted['images']}", f"data.val.annotations={fixed}", "data.root=null",
               f"output_dir={tmp_path / 'run'}", "trainer.max_epochs=1", "model.image_size=64",
               "model.pretrained_backbone=null", "data.num_workers=0", "data.batch_size=2"]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(metrics["per_class"]) == {"circle", "square", "triangle"}


def test_train_preflight_lists_all_fatal_problems_before_building_anything(clean_set, tmp_path):
    planted = planted_copy(clean_set, tmp_path)
    data = json.loads(planted["json"].read_text())
    data["annotations"].append(dict(data["annotations"][0]))  # a duplicate annotation id as well
    planted["json"].write_text(json.dumps(data))
    with pytest.raises(DataCheckError) as error:
        preflight(planted["images"], planted["json"], split="train")
    message = str(error.value)
    assert "[unknown_category]" in message and f"annotation id {planted['unknown']}" in message
    assert "[duplicate_annotation_id]" in message and "tools/check_data.py" in message
    # the fast level does not decode: the corrupt JPEG is not its business, the missing file is (an error)
    codes = error.value.report.codes()
    assert codes["missing_file"] == 1 and "unreadable_image" not in codes


def test_size_mismatch_exif_crowd_empty_and_clipped_boxes(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.jpg"), np.zeros((40, 60, 3), np.uint8))
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° CW when shown
    Image.new("RGB", (50, 30)).save(images / "rotated.jpg", exif=exif.tobytes())
    cv2.imwrite(str(images / "empty.png"), np.zeros((20, 20, 3), np.uint8))
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 80, "height": 40},
                   {"id": 2, "file_name": "rotated.jpg", "width": 50, "height": 30},
                   {"id": 3, "file_name": "empty.png", "width": 20, "height": 20}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [50, 5, 40, 10]},
                        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [1, 1, 10, 10], "iscrowd": 1},
                        {"id": 3, "image_id": 2, "category_id": 1, "bbox": [float("nan"), 1, 10, 10]}],
        "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "never"}],
    }
    path = tmp_path / "a.json"
    path.write_text(json.dumps(data))
    report = check_dataset(images, path)
    found = {(f.code, f.image_id, f.annotation_id) for f in report.findings}
    assert ("size_mismatch", 1, None) in found
    assert ("box_clipped", 1, 1) in found
    assert ("exif_rotated", 2, None) in found
    assert ("crowd_region", 2, 2) in found
    assert ("box_invalid", 2, 3) in found
    assert ("empty_image", 3, None) in found
    assert any(f.code == "unused_category" and "never" in f.message for f in report.findings)
    cleaned, changes = fix_dataset(data, report)
    assert cleaned["images"][0]["width"] == 60 and data["images"][0]["width"] == 80  # a copy
    assert cleaned["annotations"][0]["bbox"] == [50, 5, 10, 10]  # clipped to the real 60 px width
    assert [a["id"] for a in cleaned["annotations"]] == [1, 2]


def test_whole_file_written_as_xyxy_or_normalised_is_recognised(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((100, 200, 3), np.uint8))
    boxes = [[120, 10, 180, 60], [110, 50, 190, 90], [150, 20, 170, 80]]
    data = {"images": [{"id": 1, "file_name": "a.png", "width": 200, "height": 100}],
            "annotations": [{"id": i, "image_id": 1, "category_id": 1, "bbox": b} for i, b in enumerate(boxes)],
            "categories": [{"id": 1, "name": "thing"}]}
    path = tmp_path / "xyxy.json"
    path.write_text(json.dumps(data))
    report = check_dataset(images, path, level="fast")
    assert report.codes()["box_xyxy"] == 3 and report.codes()["box_format_suspect"] == 1
    normalized = dict(data, annotations=[{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0.5, 0.1, 0.25, 0.5]}])
    path.write_text(json.dumps(normalized))
    report = check_dataset(images, path, level="fast")
    assert report.codes()["boxes_normalized"] == 1
    cleaned, _ = fix_dataset(normalized, report)
    assert cleaned["annotations"][0]["bbox"] == [100.0, 10.0, 50.0, 50.0]


def test_fix_converts_every_box_of_a_file_written_in_xyxy(tmp_path):
    """Issue 20.1: a file written in [x1, y1, x2, y2] where some boxes happen to fit when read as [x, y, w, h]
    (here [10, 10, 40, 40]: a 30 x 30 box that reads as 40 x 40). The whole-file verdict is xyxy, so
    `tools/check_data.py --fix` must convert all of them, not only those that overflow, and say so."""
    from tests.helpers.env import tool_env

    images = tmp_path / "images"
    images.mkdir()
    xyxy = [[60, 60, 90, 90], [70, 10, 95, 40], [10, 10, 40, 40], [5, 55, 30, 80]]
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    expected = {}
    for image_id in (1, 2, 3):
        cv2.imwrite(str(images / f"{image_id}.png"), np.zeros((100, 100, 3), np.uint8))
        data["images"].append({"id": image_id, "file_name": f"{image_id}.png", "width": 100, "height": 100})
        for x1, y1, x2, y2 in xyxy:
            ann_id = len(data["annotations"]) + 1
            data["annotations"].append({"id": ann_id, "image_id": image_id, "category_id": 1,
                                        "bbox": [x1, y1, x2, y2], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
            expected[ann_id] = [x1, y1, x2 - x1, y2 - y1]
    source = tmp_path / "xyxy.json"
    source.write_text(json.dumps(data))
    fixed = tmp_path / "fixed.json"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "check_data.py"), "--images", str(images),
                           "--annotations", str(source), "--fix", str(fixed)],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=tool_env())
    assert "box_format_suspect" in done.stdout, done.stdout  # the check names the whole-file verdict
    cleaned = {a["id"]: a["bbox"] for a in json.loads(fixed.read_text())["annotations"]}
    assert cleaned == {ann_id: pytest.approx(box) for ann_id, box in expected.items()}
    changes = (tmp_path / "fixed.json.changes.txt").read_text().splitlines()
    for ann_id, box in expected.items():  # every box, including the three [10, 10, 40, 40] that fit as xywh
        assert any(line.startswith(f"annotation id {ann_id}: bbox") for line in changes), (ann_id, changes)
    assert any("all 12 boxes" in line for line in changes), changes
    assert "all 12 boxes" in done.stdout
    assert done.returncode == 0, done.stdout + done.stderr


def test_draw_renders_loaded_and_augmented_views(clean_set, tmp_path):
    out = tmp_path / "drawn"
    code, text, err = run(["--images", clean_set["val_images"], "--annotations", clean_set["val_annotations"],
                           "--draw", 3, "--out", out, "--image-size", 128, "--level", "fast"])
    assert code == 0, err
    files = sorted(out.glob("*.jpg"))
    assert len(files) == 3 and "3 renderings" in text
    panel = cv2.imread(str(files[0]))
    assert panel.shape[0] == 384 + 22 and panel.shape[1] > 384  # two panels side by side, titled


def test_usage_errors(clean_set, tmp_path):
    with pytest.raises(SystemExit) as error:
        run(["--images", clean_set["val_images"], "--annotations", clean_set["val_annotations"],
             "--fix", clean_set["val_annotations"]])
    assert error.value.code == 2
    with pytest.raises(SystemExit):
        run(["--images", tmp_path / "nope", "--annotations", clean_set["val_annotations"]])


def test_console_script_is_declared():
    setup = (REPO / "setup.py").read_text()
    assert "effdet-check-data=effdet.cli.check_data:main" in setup


def test_checks_is_a_package_split_by_job_whose_names_still_import():
    import re

    import effdet.data.checks as checks
    from effdet.data import MIN_BOX_SIZE as data_min_box_size
    from effdet.data.checks import (BORDER_TOLERANCE, COCO_AREA_BUCKETS, DESCRIPTIONS, LEVELS,  # noqa: F401
                                    MIN_BOX_SIZE, SEVERITIES, DataReport, Finding, PathOutsideImagesError,
                                    load_annotations, resolve_image_path)
    from effdet.data.coco import MIN_BOX_SIZE as coco_min_box_size

    assert all(getattr(checks, name, None) is not None for name in checks.__all__)
    modules = sorted(path.stem for path in (REPO / "effdet" / "data" / "checks").glob("*.py"))
    assert modules == ["__init__", "boxes", "check", "entries", "findings", "fix", "images", "paths", "statistics"]
    defined = [str(path.relative_to(REPO)) for path in (REPO / "effdet").rglob("*.py")
               if re.search(r"^MIN_BOX_SIZE\s*[:=]", path.read_text(encoding="utf-8"), re.M)]
    assert defined == ["effdet/data/checks/boxes.py"]  # one rule, one place; the dataset imports it
    assert MIN_BOX_SIZE == data_min_box_size == coco_min_box_size == 1.0

