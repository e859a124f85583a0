"""effdet.evaluation.analysis: confusion matrix, TIDE-style error breakdown (tidecv as an oracle), plots, tools/eval.py --plots."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from effdet.evaluation.analysis import ERROR_TYPES, analyze, confusion_matrix, error_breakdown
from benchmarks.cocoeval import synthetic_coco_data

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small_gt() -> dict:
    """40 images of 640 x 480, 4 classes (ids 1, 3, 5, 7), 1..12 objects each in separate cells of a 4 x 3 grid
    (no two objects overlap, so every error below has exactly one explanation)."""
    rng = np.random.default_rng(3)
    images, annotations = [], []
    for image_id in range(1, 41):
        images.append({"id": image_id, "file_name": f"{image_id:03d}.jpg", "width": 640, "height": 480})
        for cell in rng.choice(12, size=int(rng.integers(1, 13)), replace=False):
            row, col = divmod(int(cell), 4)
            w, h = rng.uniform(20, 150), rng.uniform(20, 150)
            x, y = col * 160 + rng.uniform(0, 158 - w), row * 160 + rng.uniform(0, 158 - h)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(rng.choice([1, 3, 5, 7])), "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": 0})
    categories = [{"id": c, "name": f"class_{c}"} for c in (1, 3, 5, 7)]
    return {"images": images, "annotations": annotations, "categories": categories}


def gt_as_results(gt: dict, relabel: dict | None = None) -> list:
    relabel = relabel or {}
    return [{"image_id": a["image_id"], "category_id": relabel.get(a["category_id"], a["category_id"]),
             "bbox": list(a["bbox"]), "score": 0.99 - 0.0001 * k} for k, a in enumerate(gt["annotations"])]


def test_ground_truth_as_predictions_gives_a_diagonal_matrix_and_no_errors(small_gt):
    results = gt_as_results(small_gt)
    confusion = confusion_matrix(small_gt, results)
    matrix = np.array(confusion["matrix"])
    assert confusion["classes"] == ["class_1", "class_3", "class_5", "class_7", "background"]
    counts = np.bincount([[1, 3, 5, 7].index(a["category_id"]) for a in small_gt["annotations"]], minlength=4)
    assert np.array_equal(matrix, np.diag(np.append(counts, 0)))
    breakdown = error_breakdown(small_gt, results)
    assert breakdown["ap50"] == pytest.approx(100.0)
    assert all(breakdown["counts"][k] == 0 for k in ERROR_TYPES)
    assert all(breakdown["dAP"][k] == 0 for k in ERROR_TYPES)


def test_one_class_systematically_swapped_shows_in_the_matrix_and_the_classification_error(small_gt):
    results = gt_as_results(small_gt, relabel={3: 5})  # every class_3 object predicted as class_5
    confusion = confusion_matrix(small_gt, results)
    matrix = np.array(confusion["matrix"])
    n3 = sum(1 for a in small_gt["annotations"] if a["category_id"] == 3)
    expected = np.diag([sum(1 for a in small_gt["annotations"] if a["category_id"] == c) for c in (1, 3, 5, 7)] + [0])
    expected[1, 1], expected[1, 2] = 0, n3
    assert np.array_equal(matrix, expected)
    breakdown = error_breakdown(small_gt, results)
    assert breakdown["counts"]["Cls"] == n3
    assert {k: breakdown["counts"][k] for k in ERROR_TYPES if k != "Cls"} == {k: 0 for k in ERROR_TYPES if k != "Cls"}
    assert {k: breakdown["dAP"][k] for k in ERROR_TYPES if k != "Cls"} == {k: 0.0 for k in ERROR_TYPES if k != "Cls"}
    # fixing the classification errors restores a perfect AP50: all the AP lost is classification
    assert breakdown["dAP"]["Cls"] == pytest.approx(100.0 - breakdown["ap50"])
    assert breakdown["ap50"] < 76  # class_3 scores 0, class_5 is diluted by the swapped boxes


def test_analysis_scores_copies_through_the_one_cocoeval_path_and_names_unknown_images(small_gt):
    results = gt_as_results(small_gt, relabel={3: 5})
    snapshot = json.loads(json.dumps(results))
    error_breakdown(small_gt, results)
    confusion_matrix(small_gt, results)
    assert results == snapshot  # COCO's loadRes adds id/area/segmentation to copies only
    stray = {"image_id": 999, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.5}
    with pytest.raises(ValueError, match=r"1 result image ids are not in the ground truth \(first: \[999\]\)"):
        error_breakdown(small_gt, results + [stray])  # was pycocotools' bare AssertionError


@pytest.mark.needs("tidecv")
def test_error_breakdown_matches_the_tidecv_oracle(tmp_path):
    """tidecv 1.0.1 (the TIDE authors' toolbox, MIT) as a test-only oracle. `make venv` installs it with --no-deps
    (it declares opencv-python, which would replace opencv-python-headless) after its other dependencies, which are
    in the test extra. Missing, the test is skipped and counted; with CI=true it fails (tests/conftest.py)."""
    from tidecv import TIDE, datasets

    gt, results = synthetic_coco_data(num_images=60, dets_per_image=30, num_classes=5, seed=1)
    for ann in gt["annotations"]:
        x, y, w, h = ann["bbox"]
        ann["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]  # tidecv reads it even in box mode
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "results.json").write_text(json.dumps(results))
    ours = error_breakdown(tmp_path / "gt.json", tmp_path / "results.json")
    tide = TIDE()
    with contextlib.redirect_stdout(io.StringIO()):
        run = tide.evaluate(datasets.COCO(str(tmp_path / "gt.json")),
                            datasets.COCOResult(str(tmp_path / "results.json")), mode=TIDE.BOX)
    theirs = list(tide.get_all_errors()["main"].values())[0]
    counts = {error_type.short_name: len(items) for error_type, items in run.error_dict.items()}
    assert all(ours["counts"][k] > 0 for k in ERROR_TYPES)  # every error type occurs in this data
    assert {k: ours["counts"][k] for k in ERROR_TYPES} == {k: counts.get(k, 0) for k in ERROR_TYPES}
    assert ours["ap50"] == pytest.approx(run.ap, abs=0.05)
    for kind in ERROR_TYPES:
        assert ours["dAP"][kind] == pytest.approx(theirs[kind], abs=0.05), kind


def test_analyze_writes_every_plot_and_a_gallery_of_the_worst_images(tmp_path):
    from effdet.data import make_demo_dataset

    data = make_demo_dataset(tmp_path / "data", num_train=0, num_val=6, width_range=(96, 160),
                             height_range=(64, 128), object_size=(16, 48), empty_fraction=0.0)
    gt = json.loads(Path(data["val_annotations"]).read_text())
    results = gt_as_results(gt, relabel={1: 3})
    results[0]["bbox"][0] += 0.6 * results[0]["bbox"][2]  # one localisation error
    results.append({"image_id": 1, "category_id": 7, "bbox": [0, 0, 5, 5], "score": 0.9})  # one background
    summary = analyze(data["val_annotations"], results, tmp_path / "out", images_dir=data["val_images"], gallery=3)
    out = tmp_path / "out"
    for name in ("pr_curves.png", "per_class_ap.png", "confusion_matrix.png", "errors.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 100 and image.std() > 5, name
    confusion = json.loads((out / "confusion_matrix.json").read_text())
    assert confusion["classes"] == ["circle", "square", "triangle", "background"]
    assert confusion["score_threshold"] == 0.5 and confusion["iou_threshold"] == 0.5
    errors = json.loads((out / "errors.json").read_text())
    assert errors["counts"]["Bkg"] == 1 and errors["counts"]["Cls"] >= 1 and errors["counts"]["Loc"] == 1
    assert "classification" in (out / "errors.txt").read_text()
    gallery = sorted((out / "gallery").glob("*.jpg"))
    assert len(gallery) == 3
    worst = max(confusion["errors_per_image"].values())
    # the first rendering is an image with the most errors
    first = Path(gallery[0]).stem.split("_", 1)[1]
    worst_ids = [int(i) for i, n in confusion["errors_per_image"].items() if n == worst]
    assert first in {Path(i["file_name"]).stem for i in gt["images"] if i["id"] in worst_ids}
    assert summary["errors"]["per_class"]["circle"]["AP50"] == 0.0


def load_tool(name: str):
    spec = importlib.util.spec_from_file_location(f"effdet_tool_{name}_analysis", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_eval_tool_plots_next_to_metrics_json(tmp_path, small_gt):
    eval_tool = load_tool("eval")
    (tmp_path / "gt.json").write_text(json.dumps(small_gt))
    results = gt_as_results(small_gt, relabel={7: 1})
    (tmp_path / "results.json").write_text(json.dumps(results))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = eval_tool.main(["--results", str(tmp_path / "results.json"), "--annotations", str(tmp_path / "gt.json"),
                               "--out", str(tmp_path / "eval"), "--plots"])
    assert code == 0
    written = {p.name for p in (tmp_path / "eval").iterdir()}
    assert {"metrics.json", "pr_curves.png", "per_class_ap.png", "confusion_matrix.png", "confusion_matrix.json",
            "errors.png", "errors.json", "errors.txt"} <= written
    assert "Cls    classification" in out.getvalue()
    matrix = np.array(json.loads((tmp_path / "eval" / "confusion_matrix.json").read_text())["matrix"])
    n7 = sum(1 for a in small_gt["annotations"] if a["category_id"] == 7)
    assert matrix[3, 0] == n7 and matrix[3, 3] == 0


@pytest.mark.slow
def test_training_final_validation_writes_the_error_analysis(trained_demo_run):
    run = trained_demo_run["run"]
    for name in ("metrics.json", "pr_curves.png", "per_class_ap.png", "confusion_matrix.png", "errors.png"):
        assert (run / name).is_file(), name
    confusion = json.loads((run / "confusion_matrix.json").read_text())
    assert confusion["classes"] == ["circle", "square", "triangle", "background"]
    data = json.loads(Path(trained_demo_run["data"]["val_annotations"]).read_text())
    objects = len([a for a in data["annotations"] if not a.get("iscrowd")])
    assert sum(sum(row) for row in confusion["matrix"][:-1]) == objects  # every val object in one row cell
    errors = json.loads((run / "errors.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert errors["ap50"] == pytest.approx(100 * metrics["AP50"], abs=0.05)  # the same detections as metrics.json
