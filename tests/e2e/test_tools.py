"""tools/eval.py and tools/infer.py: their main(argv) (effdet.cli.eval / effdet.cli.infer), and the real scripts
in a subprocess."""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from effdet import Predictor, create_model
from effdet.cli import eval as eval_tool
from effdet.cli import infer as infer_tool
from effdet.evaluation.report import STAT_KEYS

from tests.helpers.checkpoints import write_training_checkpoint  # tests/helpers/checkpoints.py

REPO = Path(__file__).resolve().parents[2]




def run(main, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> dict:
    """3 small demo images (categories 7 triangle, 1 circle, 3 square: non-contiguous ids)."""
    from effdet.data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("small_set"), num_train=0, num_val=3,
                             width_range=(96, 160), height_range=(64, 128), object_size=(16, 48))


@pytest.fixture(scope="module")
def untrained_ckpt(tmp_path_factory) -> Path:
    """A checkpoint in training's format (EMA under ``ema.module.``) of an untrained Lite0 at 64 px:
    its class bias -log(99) gives ~100 low-score detections per image, enough to test plumbing."""
    torch.manual_seed(0)
    model = create_model("efficientdet_lite0", num_classes=3, image_size=64)
    path = tmp_path_factory.mktemp("ckpt") / "best.ckpt"
    write_training_checkpoint(path, model, ["circle", "square", "triangle"], [1, 3, 7], ema=model, train_config={
        "eval": {"score_threshold": 0.001, "pre_nms_top_k": 5000, "nms": "hard", "iou_threshold": 0.5,
                 "soft_nms_sigma": 0.5, "max_detections": 100, "every_n_epochs": 1, "backend": "pycocotools"},
        "data": {"batch_size": 2, "val_batch_size": None}})
    return path


def gt_results(annotations: dict, shift: float = 0.0) -> list[dict]:
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "score": 1.0 - 0.001 * i,
             "bbox": [a["bbox"][0] + shift, a["bbox"][1], a["bbox"][2], a["bbox"][3]]}
            for i, a in enumerate(annotations["annotations"])]


# ------------------------------------------------------------------------------------------ eval


def test_eval_detections_keep_dataset_category_ids_and_match_predict(small_set, untrained_ckpt, tmp_path):
    out = tmp_path / "eval"
    code, stdout, stderr = run(eval_tool.main, [
        "--weights", untrained_ckpt, "--images", small_set["val_images"], "--annotations",
        small_set["val_annotations"], "--out", out, "--batch-size", 1, "--workers", 0])
    assert code == 0, stderr
    assert stdout.count("Average Precision  (AP) @[") == 6 and stdout.count("Average Recall     (AR) @[") == 6
    assert "class" in stdout and "triangle" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(STAT_KEYS) <= set(metrics)
    assert set(metrics["per_class"]) == {"circle", "square", "triangle"}
    assert metrics["checkpoint"] == str(untrained_ckpt)

    results = json.loads((out / "detections.json").read_text())
    assert {r["category_id"] for r in results} == {1, 3, 7}  # dataset ids, not labels 0..2
    # the same detections as Predictor.predict on the files: label i -> category_ids[i], xyxy -> xywh
    predictor = Predictor.from_checkpoint(untrained_ckpt, device="cpu")
    annotations = json.loads(Path(small_set["val_annotations"]).read_text())
    for image in annotations["images"]:
        predicted = predictor.predict(Path(small_set["val_images"]) / image["file_name"])[0]
        mine = [r for r in results if r["image_id"] == image["id"]]
        assert len(mine) == len(predicted["scores"]) > 0
        expected_ids = [predictor.category_ids[label] for label in predicted["labels"]]
        assert [r["category_id"] for r in mine] == expected_ids
        xyxy = predicted["boxes"]
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        np.testing.assert_allclose([r["bbox"] for r in mine], xywh, atol=0.011)
        np.testing.assert_allclose([r["score"] for r in mine], predicted["scores"], atol=1e-5)
        boxes = np.asarray([r["bbox"] for r in mine])
        assert (boxes[:, 0] + boxes[:, 2] <= image["width"] + 0.01).all()
        assert (boxes[:, 1] + boxes[:, 3] <= image["height"] + 0.01).all()


def test_eval_scores_a_results_file_like_pycocotools(small_set, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    annotations = json.loads(Path(small_set["val_annotations"]).read_text())
    perfect, shifted = tmp_path / "perfect.json", tmp_path / "shifted.json"
    perfect.write_text(json.dumps(gt_results(annotations)))
    shifted.write_text(json.dumps(gt_results(annotations, shift=4.0)))

    code, stdout, _ = run(eval_tool.main, ["--results", perfect, "--annotations", small_set["val_annotations"],
                                           "--out", tmp_path / "a"])
    assert code == 0
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for key in ("AP", "AP50", "AP75", "AR10", "AR100"):  # at most 6 objects per image
        assert metrics[key] == pytest.approx(1.0), key
    for key in ("APs", "APm", "APl", "ARs", "ARm", "ARl"):  # -1: no ground truth of that size
        assert metrics[key] == pytest.approx(1.0) or metrics[key] == -1.0, key
    assert all(ap == pytest.approx(1.0) for ap in metrics["per_class"].values() if ap is not None)
    assert not (tmp_path / "a" / "detections.json").exists()

    coco = COCO(small_set["val_annotations"])
    reference = COCOeval(coco, coco.loadRes(str(shifted)), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        reference.evaluate(), reference.accumulate(), reference.summarize()
    for coco_eval in ("pycocotools", "faster_coco_eval"):
        code, _, _ = run(eval_tool.main, ["--results", shifted, "--annotations", small_set["val_annotations"],
                                          "--out", tmp_path / coco_eval, "--coco-eval", coco_eval])
        assert code == 0
        metrics = json.loads((tmp_path / coco_eval / "metrics.json").read_text())
        assert [metrics[k] for k in STAT_KEYS] == pytest.approx(list(reference.stats), abs=1e-12), coco_eval
        assert 0.0 < metrics["AP"] < 1.0 and metrics["coco_eval"] == coco_eval
    # the old flag works for one release, saying so
    code, _, err = run(eval_tool.main, ["--results", shifted, "--annotations", small_set["val_annotations"],
                                        "--out", tmp_path / "old_flag", "--backend", "faster_coco_eval"])
    assert code == 0 and "--backend is deprecated" in err and "use --coco-eval faster_coco_eval" in err
    metrics = json.loads((tmp_path / "old_flag" / "metrics.json").read_text())
    assert metrics["coco_eval"] == "faster_coco_eval"
    assert [metrics[k] for k in STAT_KEYS] == pytest.approx(list(reference.stats), abs=1e-12)
    with pytest.raises(SystemExit):
        run(eval_tool.main, ["--results", shifted, "--annotations", small_set["val_annotations"], "--out",
                             tmp_path / "both", "--backend", "faster_coco_eval", "--coco-eval", "pycocotools"])


def sticking_out_ground_truth(annotations: dict, detections: list[dict], margin: float = 40.0) -> dict:
    """A ground truth whose boxes stick out of their images, built from a model's own detections: per image, its
    best detection touching the right border, extended ``margin`` px past it (and, if it touches the bottom, past
    that too). Clipped to the image such a box is that detection again (IoU 1); as the file says it is larger."""
    sizes = {i["id"]: (i["width"], i["height"]) for i in annotations["images"]}
    boxes = []
    for image_id, (width, height) in sizes.items():
        touching = [r for r in detections if r["image_id"] == image_id and r["bbox"][0] + r["bbox"][2] >= width - 0.01]
        assert touching, f"no detection touches the right border of image {image_id}"
        best = max(touching, key=lambda r: r["score"])
        x, y, w, h = best["bbox"]
        h_out = h + margin if y + h >= height - 0.01 else h
        boxes.append({"id": len(boxes) + 1, "image_id": image_id, "category_id": best["category_id"],
                      "bbox": [x, y, w + margin, h_out], "area": (w + margin) * h_out, "iscrowd": 0})
    return dict(annotations, annotations=boxes)


def test_eval_weights_and_results_score_against_the_official_ground_truth(small_set, untrained_ckpt, tmp_path):
    """Issue 20.4: `--weights` scored against a cleaned copy of the JSON (boxes clipped to their image), `--results`
    against the JSON itself, so the same detections got two APs. Both must score what pycocotools scores on the
    file (COCO(json)), here with boxes that stick out of their images."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from tests.helpers.env import tool_env

    code, _, stderr = run(eval_tool.main, ["--weights", untrained_ckpt, "--images", small_set["val_images"],
                                           "--annotations", small_set["val_annotations"], "--out", tmp_path / "first",
                                           "--workers", 0])
    assert code == 0, stderr
    first = json.loads((tmp_path / "first" / "detections.json").read_text())
    truth = sticking_out_ground_truth(json.loads(Path(small_set["val_annotations"]).read_text()), first)
    gt_path = tmp_path / "sticking_out.json"
    gt_path.write_text(json.dumps(truth))

    def eval_script(*argv) -> dict:
        out = tmp_path / f"run{len(list(tmp_path.glob('run*')))}"
        done = subprocess.run([sys.executable, str(REPO / "tools" / "eval.py"), *map(str, argv), "--annotations",
                               str(gt_path), "--out", str(out)], capture_output=True, text=True, timeout=600,
                              env=tool_env(), cwd=REPO)
        assert done.returncode == 0, done.stderr
        return {"metrics": json.loads((out / "metrics.json").read_text()), "out": out}

    with_weights = eval_script("--weights", untrained_ckpt, "--images", small_set["val_images"], "--workers", 0)
    detections = with_weights["out"] / "detections.json"
    assert json.loads(detections.read_text()) == first  # the same detections: only the ground truth is new
    with_results = eval_script("--results", detections)

    coco = COCO(str(gt_path))  # what the official tools score against
    reference = COCOeval(coco, coco.loadRes(str(detections)), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        reference.evaluate(), reference.accumulate(), reference.summarize()
    for name, result in (("--weights", with_weights), ("--results", with_results)):
        assert [result["metrics"][k] for k in STAT_KEYS] == pytest.approx(list(reference.stats), abs=1e-12), name
    assert with_weights["metrics"]["per_class"] == with_results["metrics"]["per_class"]


def test_training_validation_scores_against_the_official_ground_truth(small_set, tmp_path):
    """Issue 20.4, training's side: the validation that training logs (DetectionModule under a Lightning Trainer,
    the val set from the config) scores against the annotation file as pycocotools loads it, not against the
    training dataset's clipped copy."""
    import lightning as L
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from effdet.engine.schema import load_train_config, resolve_model_config
    from effdet.engine.datamodule import DetectionDataModule
    from effdet.engine.module import DetectionModule

    def validate(annotations: Path) -> DetectionModule:
        cfg = load_train_config(str(REPO / "configs" / "demo.yaml"), [
            "data.root=null", f"data.train.images={small_set['val_images']}", f"data.train.annotations={annotations}",
            f"data.val.images={small_set['val_images']}", f"data.val.annotations={annotations}",
            "data.num_workers=0", "data.batch_size=2", "model.image_size=64", "model.pretrained_backbone=null"])
        model_config = resolve_model_config(cfg.model, num_classes=1)
        datamodule = DetectionDataModule(cfg.data, model_config.image_size, model_config.mean)
        torch.manual_seed(0)  # the same weights in every call: only the ground truth changes
        module = DetectionModule(cfg, datamodule.class_names, datamodule.category_ids)
        trainer = L.Trainer(devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, default_root_dir=str(tmp_path))
        trainer.validate(module, datamodule=datamodule, verbose=False)
        return module

    first = validate(Path(small_set["val_annotations"])).last_evaluator.results()
    truth = sticking_out_ground_truth(json.loads(Path(small_set["val_annotations"]).read_text()), first)
    gt_path = tmp_path / "sticking_out.json"
    gt_path.write_text(json.dumps(truth))
    module = validate(gt_path)
    results = module.last_evaluator.results()
    assert results == first
    coco = COCO(str(gt_path))
    reference = COCOeval(coco, coco.loadRes(results), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        reference.evaluate(), reference.accumulate(), reference.summarize()
    assert [module.last_metrics[k] for k in STAT_KEYS] == pytest.approx(list(reference.stats), abs=1e-12)
    assert reference.stats[0] > 0  # detections meet the ground truth: not a trivial all-zero comparison


def test_eval_test_dev_style_writes_only_detections(small_set, untrained_ckpt, tmp_path):
    images = Path(tmp_path / "images")
    shutil.copytree(small_set["val_images"], images)
    (images / "readme.txt").write_text("not an image")  # not listed: only image extensions are
    (images / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")  # listed, unreadable: reported
    out = tmp_path / "sequential"
    code, stdout, stderr = run(eval_tool.main, ["--weights", untrained_ckpt, "--images", images, "--out", out,
                                                "--workers", 0, "eval.max_detections=5"])
    assert code == 0, stderr
    assert not (out / "metrics.json").exists()
    mapping = json.loads((out / "image_ids.json").read_text())["images"]
    assert [(m["id"], m["file_name"]) for m in mapping] == [(1, "val_00000.jpg"), (2, "val_00001.jpg"),
                                                            (3, "val_00002.jpg")]
    skipped = json.loads((out / "image_ids.json").read_text())["skipped"]
    assert [s["file_name"] for s in skipped] == ["zz_broken.jpg"] and "zz_broken.jpg" in stderr
    results = json.loads((out / "detections.json").read_text())
    per_image = {i: sum(r["image_id"] == i for r in results) for i in (1, 2, 3)}
    assert per_image == {1: 5, 2: 5, 3: 5}  # the override eval.max_detections=5 applies

    info = tmp_path / "image_info.json"
    info.write_text(json.dumps({"images": [{"id": 501, "file_name": "val_00002.jpg"},
                                           {"id": 42, "file_name": "val_00000.jpg"}]}))
    out = tmp_path / "with_info"
    code, _, stderr = run(eval_tool.main, ["--weights", untrained_ckpt, "--images", images, "--image-info", info,
                                           "--out", out, "--workers", 0])
    assert code == 0, stderr
    assert {r["image_id"] for r in json.loads((out / "detections.json").read_text())} == {501, 42}
    assert not (out / "image_ids.json").exists() and not (out / "metrics.json").exists()


def test_eval_file_names_follow_the_images_folder_rule(small_set, untrained_ckpt, tmp_path):
    """Issue 20.5: a `file_name` becomes a path only by the dataset's rule: relative to the images folder, not
    absolute and not leaving it with `..` (unless --allow-outside-images). Before, --image-info read any file and
    the --plots gallery drew it."""
    images = tmp_path / "images"
    shutil.copytree(small_set["val_images"], images)
    outside = tmp_path / "outside.jpg"
    shutil.copy(images / "val_00000.jpg", outside)
    for name in ("../outside.jpg", str(outside)):
        info = tmp_path / "image_info.json"
        info.write_text(json.dumps({"images": [{"id": 1, "file_name": "val_00001.jpg"}, {"id": 7, "file_name": name}]}))
        out = tmp_path / "refused"
        code, _, stderr = run(eval_tool.main, ["--weights", untrained_ckpt, "--images", images, "--image-info", info,
                                               "--out", out, "--workers", 0])
        assert code == 2, stderr
        assert f"'{name}'" in stderr and "--allow-outside-images" in stderr, stderr
        assert not (out / "detections.json").exists()
    code, _, stderr = run(eval_tool.main, ["--weights", untrained_ckpt, "--images", images, "--image-info", info,
                                           "--out", tmp_path / "allowed", "--workers", 0, "--allow-outside-images"])
    assert code == 0, stderr
    assert {r["image_id"] for r in json.loads((tmp_path / "allowed" / "detections.json").read_text())} == {1, 7}

    # --results --plots: the gallery draws images from --images; one named '../outside.jpg' is not read
    truth = json.loads(Path(small_set["val_annotations"]).read_text())
    truth["images"][0]["file_name"] = "../outside.jpg"
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps(truth))
    empty = tmp_path / "empty.json"
    empty.write_text("[]")  # no detections: every image has missed objects, so every one is a gallery candidate
    code, _, stderr = run(eval_tool.main, ["--results", empty, "--annotations", gt_path, "--images", images,
                                           "--out", tmp_path / "plots", "--plots", "--gallery", 8])
    assert code == 0, stderr
    drawn = sorted(p.name.split("_", 1)[1] for p in (tmp_path / "plots" / "gallery").glob("*.jpg"))
    expected = sorted(i["file_name"] for i in truth["images"][1:]
                      if any(a["image_id"] == i["id"] for a in truth["annotations"]))
    assert drawn == expected and "outside" not in " ".join(drawn)


def test_eval_argument_errors(small_set, untrained_ckpt, tmp_path):
    for wrong in ("nms_threshold", "eval.nms_threshold"):
        code, _, stderr = run(eval_tool.main, ["--weights", untrained_ckpt, "--images", small_set["val_images"],
                                               "--annotations", small_set["val_annotations"], "--out", tmp_path,
                                               f"{wrong}=0.6"])
        assert code == 2
        assert f"unknown post-processing option(s) ['{wrong}']" in stderr and "eval.iou_threshold" in stderr
    code, _, stderr = run(eval_tool.main, ["--weights", untrained_ckpt, "--images", small_set["val_images"],
                                           "--out", tmp_path, "model.image_size=128"])
    assert code == 2 and "effdet-eval takes the post-processing keys of the 'eval' section" in stderr, stderr
    with pytest.raises(SystemExit) as error, contextlib.redirect_stderr(io.StringIO()):
        eval_tool.main(["--results", str(tmp_path / "r.json")])
    assert error.value.code == 2
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as message:
        eval_tool.main(["--images", small_set["val_images"]])
    assert "--weights" in message.getvalue()


@pytest.mark.slow
def test_eval_reproduces_the_val_metrics_training_logged(trained_demo_run, tmp_path):
    logged = json.loads(trained_demo_run["metrics"].read_text())
    assert logged["checkpoint"] == str(trained_demo_run["best"])
    data = trained_demo_run["data"]
    code, stdout, stderr = run(eval_tool.main, [
        "--weights", trained_demo_run["best"], "--images", data["val_images"], "--annotations",
        data["val_annotations"], "--out", tmp_path, "--workers", 0])
    assert code == 0, stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [metrics[k] for k in STAT_KEYS] == [logged[k] for k in STAT_KEYS]  # the same 12 numbers
    assert metrics["per_class"] == logged["per_class"]
    assert metrics["AR100"] > 0  # not a trivial all-zero comparison


# ------------------------------------------------------------------------------------------ infer


def mixed_folder(small_set, folder: Path) -> Path:
    folder.mkdir()
    for name in ("val_00000.jpg", "val_00001.jpg"):
        shutil.copy(Path(small_set["val_images"]) / name, folder / name)
    data = (Path(small_set["val_images"]) / "val_00002.jpg").read_bytes()
    (folder / "broken.jpg").write_bytes(data[: len(data) // 2])  # truncated JPEG
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_infer_processes_good_images_and_reports_bad_ones(small_set, untrained_ckpt, tmp_path):
    folder = mixed_folder(small_set, tmp_path / "mixed")
    out = tmp_path / "out"
    code, stdout, stderr = run(infer_tool.main, [folder, "--weights", untrained_ckpt, "--out", out,
                                                 "--score-thr", 0.005])
    assert code == 0, stderr
    assert "broken.jpg" in stderr and "notes.txt" in stderr
    assert sorted(p.name for p in out.glob("*.jpg")) == ["val_00000.jpg", "val_00001.jpg"]
    records = json.loads((out / "detections.json").read_text())
    assert [Path(r["file"]).name for r in records] == ["val_00000.jpg", "val_00001.jpg"]
    for record in records:
        assert set(record) == {"file", "width", "height", "boxes", "scores", "labels", "names"}
        assert len(record["boxes"]) == len(record["scores"]) == len(record["names"]) > 0
        assert min(record["scores"]) >= 0.005
        assert set(record["names"]) <= {"circle", "square", "triangle"}
        assert record["names"] == [["circle", "square", "triangle"][i] for i in record["labels"]]
        boxes = np.asarray(record["boxes"])
        assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= record["width"]).all()
        assert (boxes[:, [1, 3]] <= record["height"]).all()
    lines = stdout.strip().splitlines()
    assert sum("val_0000" in line and "detection" in line for line in lines) == 2  # one line per image
    assert lines[-1] == f"annotated images: {out.resolve()}"
    annotated = cv2.imread(str(out / "val_00000.jpg"))
    original = cv2.imread(str(folder / "val_00000.jpg"))
    assert annotated.shape == original.shape and not np.array_equal(annotated, original)


def test_infer_fails_only_when_nothing_is_processed(small_set, untrained_ckpt, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.png").write_bytes(b"")
    code, _, stderr = run(infer_tool.main, [folder, tmp_path / "missing.jpg", "--weights", untrained_ckpt,
                                            "--out", tmp_path / "out"])
    assert code == 1
    assert "nothing could be processed" in stderr
    assert "notes.txt" in stderr and "empty.png" in stderr and "missing.jpg" in stderr


def test_infer_without_weights_explains_how_to_get_them(monkeypatch, tmp_path, small_set, untrained_ckpt):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(infer_tool, "PROJECT_ROOT", tmp_path / "project")
    code, _, stderr = run(infer_tool.main, [small_set["val_images"]])
    assert code == 2
    for hint in ("--weights", "make demo", "python tools/train.py configs/demo.yaml", "tools/convert_weights.py"):
        assert hint in stderr
    # the demo run's checkpoint is used (and named) when it exists
    demo = tmp_path / "project" / "runs" / "demo" / "checkpoints"
    demo.mkdir(parents=True)
    shutil.copy(untrained_ckpt, demo / "best.ckpt")
    code, stdout, stderr = run(infer_tool.main, [Path(small_set["val_images"]) / "val_00000.jpg", "--out",
                                                 tmp_path / "out"])
    assert code == 0, stderr
    assert f"using the demo run's checkpoint {demo / 'best.ckpt'}" in stdout


def test_infer_on_a_video_and_a_glob_with_limit(small_set, untrained_ckpt, tmp_path):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    if not writer.isOpened():
        pytest.skip("this OpenCV build cannot write MJPG video")
    for index in range(6):
        frame = np.full((64, 96, 3), 40 * index, np.uint8)
        cv2.rectangle(frame, (10 + 5 * index, 10), (50 + 5 * index, 50), (0, 0, 255), -1)
        writer.write(frame)
    writer.release()
    out = tmp_path / "out"
    code, stdout, stderr = run(infer_tool.main, [video, "--weights", untrained_ckpt, "--out", out, "--limit", 4,
                                                 "--score-thr", 0.005, "--show"])
    assert code == 0, stderr
    records = json.loads((out / "detections.json").read_text())
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    assert {(r["width"], r["height"]) for r in records} == {(96, 64)}
    written = out / "clip.mp4"
    frames_dir = out / "clip"
    assert written.exists() or len(list(frames_dir.glob("*.jpg"))) == 4
    if written.exists():
        assert cv2.VideoCapture(str(written)).get(cv2.CAP_PROP_FRAME_COUNT) == 4
    assert "4 frames" in stdout

    pattern = str(Path(small_set["val_images"]) / "val_*.jpg")
    code, stdout, stderr = run(infer_tool.main, [pattern, "--weights", untrained_ckpt, "--out", tmp_path / "glob",
                                                 "--limit", 2])
    assert code == 0, stderr
    assert len(json.loads((tmp_path / "glob" / "detections.json").read_text())) == 2


@pytest.mark.slow
def test_infer_like_make_demo_prints_where_the_annotated_images_are(trained_demo_run, tmp_path):
    out = tmp_path / "infer"
    code, stdout, stderr = run(infer_tool.main, [trained_demo_run["data"]["val_images"], "--limit", 4, "--weights",
                                                 trained_demo_run["best"], "--out", out])
    assert code == 0, stderr
    assert len(list(out.glob("*.jpg"))) == 4
    assert len(json.loads((out / "detections.json").read_text())) == 4
    assert stdout.strip().splitlines()[-1] == f"annotated images: {out.resolve()}"


def test_eval_and_infer_scripts_run_as_real_subprocesses(small_set, untrained_ckpt, tmp_path):
    """`python tools/eval.py` and `python tools/infer.py` as a user runs them (the shims over effdet.cli)."""
    import subprocess

    from tests.helpers.env import tool_env

    annotations = json.loads(Path(small_set["val_annotations"]).read_text())
    perfect = tmp_path / "perfect.json"
    perfect.write_text(json.dumps(gt_results(annotations)))
    done = subprocess.run([sys.executable, str(REPO / "tools" / "eval.py"), "--results", str(perfect),
                           "--annotations", small_set["val_annotations"], "--out", str(tmp_path / "eval")],
                          capture_output=True, text=True, timeout=600, env=tool_env(), cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["AP"] == pytest.approx(1.0)
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = 1.000" in done.stdout

    image = sorted(Path(small_set["val_images"]).glob("*.jpg"))[0]
    done = subprocess.run([sys.executable, str(REPO / "tools" / "infer.py"), str(image), "--weights",
                           str(untrained_ckpt), "--out", str(tmp_path / "infer"), "--score-thr", "0.005",
                           "--device", "cpu"], capture_output=True, text=True, timeout=600, env=tool_env(), cwd=REPO)
    assert done.returncode == 0, done.stderr
    records = json.loads((tmp_path / "infer" / "detections.json").read_text())
    assert [Path(r["file"]).name for r in records] == [image.name] and len(records[0]["scores"]) > 0
    assert (tmp_path / "infer" / image.name).is_file()


# ------------------------------------------------------------------------------------------ sliced inference


def coco_of(predicted: dict, image_id: int) -> list[tuple]:
    """Predictor output -> sorted (image_id, category_id, xywh rounded, score rounded) as detections.json has them."""
    boxes = predicted["boxes"]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1).round(2)
    return sorted((image_id, int(c), *map(float, b), round(float(s), 5))
                  for b, s, c in zip(xywh, predicted["scores"], predicted["category_ids"]))


def test_eval_with_slicing_detects_slice_by_slice(small_set, untrained_ckpt, tmp_path):
    """tools/eval.py ... eval.slice_size=48: every image (96-160 x 64-128 px) is detected in 48 px slices and the
    merged detections are scored; detections.json holds what the sliced Predictor finds on the files, which is not
    what the whole-image path finds; metrics.json records the keys and max_dets."""
    out = tmp_path / "eval"
    code, stdout, stderr = run(eval_tool.main, [
        "--weights", untrained_ckpt, "--images", small_set["val_images"], "--annotations",
        small_set["val_annotations"], "--out", out, "--batch-size", 2, "--workers", 0,
        "eval.slice_size=48", "eval.merge=nmm", "eval.merge_metric=ios", "eval.max_detections=300"])
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["postprocess"]["slice_size"] == 48 and metrics["postprocess"]["merge"] == "nmm"
    assert metrics["max_dets"] == 300 and "maxDets=300" in stdout
    results = json.loads((out / "detections.json").read_text())
    sliced = Predictor.from_checkpoint(untrained_ckpt, device="cpu", slice_size=48, merge="nmm", merge_metric="ios",
                                       max_detections=300)
    whole = Predictor.from_checkpoint(untrained_ckpt, device="cpu", max_detections=300)
    annotations = json.loads(Path(small_set["val_annotations"]).read_text())
    for image in annotations["images"]:
        path = Path(small_set["val_images"]) / image["file_name"]
        mine = sorted((r["image_id"], r["category_id"], *r["bbox"], r["score"]) for r in results
                      if r["image_id"] == image["id"])
        expected = coco_of(sliced.predict(path)[0], image["id"])
        assert len(mine) == len(expected) > 0
        np.testing.assert_allclose(np.asarray(mine), np.asarray(expected), atol=0.011)
        assert coco_of(whole.predict(path)[0], image["id"]) != expected  # slicing changed the answer


def test_infer_with_slicing_on_a_large_image(small_set, untrained_ckpt, tmp_path):
    """tools/infer.py big.png ... eval.slice_size=64: the detections of a 300 x 500 image are the sliced Predictor's
    (and not the whole-image ones)."""
    big = tmp_path / "big.png"
    tiles = [cv2.imread(str(p)) for p in sorted(Path(small_set["val_images"]).glob("*"))]
    canvas = np.full((300, 500, 3), 90, np.uint8)
    for index, tile in enumerate(tiles):
        tile = tile[:100, :150]
        canvas[20 + 90 * index:20 + 90 * index + tile.shape[0], 40 + 140 * index:40 + 140 * index + tile.shape[1]] = tile
    cv2.imwrite(str(big), canvas)
    out = tmp_path / "out"
    code, stdout, stderr = run(infer_tool.main, [big, "--weights", untrained_ckpt, "--out", out, "--score-thr", 0.005,
                                                 "eval.slice_size=64", "eval.slice_full_image=true"])
    assert code == 0, stderr
    record = json.loads((out / "detections.json").read_text())[0]
    sliced = Predictor.from_checkpoint(untrained_ckpt, device="cpu", score_threshold=0.005, slice_size=64,
                                       slice_full_image=True).predict(big)[0]
    whole = Predictor.from_checkpoint(untrained_ckpt, device="cpu", score_threshold=0.005).predict(big)[0]
    assert len(record["boxes"]) == len(sliced["boxes"]) > 0
    np.testing.assert_allclose(record["boxes"], sliced["boxes"], atol=0.011)
    np.testing.assert_allclose(record["scores"], sliced["scores"], atol=1e-4)
    assert len(whole["boxes"]) != len(sliced["boxes"]) or not np.allclose(whole["boxes"], sliced["boxes"])


def test_eval_scores_a_dense_results_file_with_max_detections(tmp_path):
    """tools/eval.py --results ... eval.max_detections=300: an image with 300 objects found perfectly scores AP 1;
    cut at COCO's 100 it cannot (recall at most 1/3)."""
    from tests.unit.test_evaluation import dense_image, gt_as_results

    gt = dense_image()
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    results = [dict(r, score=1.0 - 0.001 * i) for i, r in enumerate(gt_as_results(gt))]
    (tmp_path / "results.json").write_text(json.dumps(results))
    scored = {}
    for name, extra in (("capped", []), ("dense", ["eval.max_detections=300"])):
        code, stdout, stderr = run(eval_tool.main, ["--results", tmp_path / "results.json", "--annotations",
                                                    tmp_path / "gt.json", "--out", tmp_path / name, *extra])
        assert code == 0, stderr
        scored[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert scored["dense"]["AP"] == pytest.approx(1.0) and scored["dense"]["max_dets"] == 300
    assert scored["capped"]["AP"] < 0.5 and scored["capped"]["max_dets"] == 100
    assert set(STAT_KEYS) <= set(scored["dense"])
    with pytest.raises(SystemExit):
        eval_tool.main(["--results", str(tmp_path / "results.json"), "--annotations", str(tmp_path / "gt.json"),
                        "eval.nms=hard"])
