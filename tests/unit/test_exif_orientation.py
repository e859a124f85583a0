"""EXIF orientation (issue 20.3): ``data.exif_orientation: apply | ignore``. With ``apply`` (the default) an image
is used as displayed, as annotation tools and OpenCV's default reading show it: in training's loader, the importers,
the checker and inference; ``ignore`` keeps the stored pixels.

The fixture is a phone-style JPEG: pixels stored landscape (60 x 40) with EXIF orientation 6 ("rotate 90° clockwise
to display"), so it is displayed portrait (40 x 60), and a red square drawn on the displayed image at
x 5..25, y 35..55, a place that exists only in the portrait view."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from tests.helpers.env import REPO, tool_env

DISPLAYED_W, DISPLAYED_H = 40, 60
RED_DISPLAYED = (5, 35, 25, 55)  # x1, y1, x2, y2 on the displayed image


def red_box(rgb: np.ndarray) -> tuple:
    """xyxy (continuous pixels) around the red pixels of an RGB image."""
    mask = (rgb[..., 0] > 180) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def phone_jpeg(path: Path, orientation: int = 6) -> dict:
    """Write the phone-style JPEG (the same stored pixels with another ``orientation`` tag when asked); returns
    the displayed and stored RGB arrays as PIL sees them."""
    displayed = np.full((DISPLAYED_H, DISPLAYED_W, 3), 200, np.uint8)
    x1, y1, x2, y2 = RED_DISPLAYED
    displayed[y1:y2, x1:x2] = (255, 0, 0)
    stored = Image.fromarray(displayed).transpose(Image.Transpose.ROTATE_90)  # 90° counter-clockwise
    exif = Image.Exif()
    exif[0x0112] = orientation
    path.parent.mkdir(parents=True, exist_ok=True)
    stored.save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as image:
        stored_rgb = np.asarray(image.convert("RGB"))
        shown = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    if orientation == 6:
        assert shown.shape == (DISPLAYED_H, DISPLAYED_W, 3) and stored_rgb.shape == (DISPLAYED_W, DISPLAYED_H, 3)
        assert red_box(shown) == RED_DISPLAYED  # PIL shows what we drew
    return {"displayed": shown, "stored": stored_rgb}


def coco_file(folder: Path, width: int, height: int, box_xyxy: tuple) -> Path:
    x1, y1, x2, y2 = box_xyxy
    data = {"images": [{"id": 1, "file_name": "phone.jpg", "width": width, "height": height}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [x1, y1, x2 - x1, y2 - y1],
                             "area": (x2 - x1) * (y2 - y1), "iscrowd": 0}],
            "categories": [{"id": 1, "name": "thing"}]}
    path = folder / f"instances_{width}x{height}.json"
    path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------------------------------------ loading


@pytest.mark.parametrize("orientation", range(1, 9))
def test_load_image_applies_every_orientation_as_opencv_default_reading_shows_it(tmp_path, orientation):
    from effdet.data.preprocess import load_image

    path = tmp_path / f"o{orientation}.jpg"
    phone_jpeg(path, orientation)
    shown_by_opencv = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # IMREAD_COLOR applies EXIF
    stored_by_opencv = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION),
                                    cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(load_image(path), shown_by_opencv)
    np.testing.assert_array_equal(load_image(path, exif_orientation="apply"), shown_by_opencv)
    np.testing.assert_array_equal(load_image(path, exif_orientation="ignore"), stored_by_opencv)
    with Image.open(path) as image:  # and PIL's exif_transpose agrees on the geometry
        assert load_image(path).shape[:2] == ImageOps.exif_transpose(image).size[::-1]
    with pytest.raises(ValueError, match="apply.*ignore"):
        load_image(path, exif_orientation="sideways")


def test_training_loader_uses_the_displayed_image_and_ignore_keeps_the_stored_pixels(tmp_path):
    """Through training's loader (DetectionDataModule from the config, the validation transform): the box drawn on the
    displayed image lands on the red square; `data.exif_orientation=ignore` serves the stored pixels, for data
    annotated on them."""
    from effdet.engine.schema import ConfigError, load_train_config
    from effdet.engine.datamodule import DetectionDataModule

    images = tmp_path / "images"
    arrays = phone_jpeg(images / "phone.jpg")
    displayed_json = coco_file(tmp_path, DISPLAYED_W, DISPLAYED_H, RED_DISPLAYED)
    stored_box = red_box(arrays["stored"])  # the same square on the stored pixels
    stored_json = coco_file(tmp_path, DISPLAYED_H, DISPLAYED_W, stored_box)

    def val_sample(json_path: Path, *extra: str) -> dict:
        overrides = ["data.root=null", f"data.train.images={images}", f"data.train.annotations={json_path}",
                     f"data.val.images={images}", f"data.val.annotations={json_path}", "data.num_workers=0",
                     "model.pretrained_backbone=null", *extra]
        cfg = load_train_config(str(REPO / "configs" / "demo.yaml"), overrides)
        module = DetectionDataModule(cfg.data, [64, 64], [127.0, 127.0, 127.0])
        return module.val_set[0]

    for json_path, extra, size, box in ((displayed_json, (), (DISPLAYED_H, DISPLAYED_W), RED_DISPLAYED),
                                        (stored_json, ("data.exif_orientation=ignore",), (DISPLAYED_W, DISPLAYED_H),
                                         stored_box)):
        sample = val_sample(json_path, *extra)
        assert tuple(sample["orig_size"]) == size, extra
        scale = sample["scale"]
        assert scale == pytest.approx(64 / max(size))
        np.testing.assert_allclose(sample["boxes"].reshape(-1, 4).numpy()[0], np.array(box) * scale, atol=1e-3)
        canvas = sample["image"].permute(1, 2, 0).numpy()
        x1, y1, x2, y2 = (int(round(v * scale)) for v in box)
        inside = canvas[y1 + 2:y2 - 2, x1 + 2:x2 - 2].reshape(-1, 3).mean(axis=0)
        assert inside[0] > 180 and inside[1] < 90 and inside[2] < 90, (extra, inside)  # the box is on the square
    with pytest.raises(ConfigError, match="data.exif_orientation"):
        load_train_config(str(REPO / "configs" / "demo.yaml"), ["data.exif_orientation=sideways"])


# ------------------------------------------------------------------------------------------ importers


def test_convert_dataset_takes_yolo_sizes_from_the_displayed_image(tmp_path):
    root = tmp_path / "yolo"
    arrays = phone_jpeg(root / "images" / "phone.jpg")
    x1, y1, x2, y2 = RED_DISPLAYED  # a YOLO label drawn on the displayed image (as annotation tools show it)
    (root / "labels").mkdir()
    (root / "labels" / "phone.txt").write_text(
        f"0 {(x1 + x2) / 2 / DISPLAYED_W} {(y1 + y2) / 2 / DISPLAYED_H} {(x2 - x1) / DISPLAYED_W} "
        f"{(y2 - y1) / DISPLAYED_H}\n")
    (root / "classes.txt").write_text("thing\n")

    def convert(*extra) -> dict:
        out = tmp_path / f"out{len(extra)}.json"
        done = subprocess.run([sys.executable, str(REPO / "tools" / "convert_dataset.py"), "--from", "yolo",
                               str(root), "--out", str(out), *extra], cwd=REPO, capture_output=True, text=True,
                              timeout=600, env=tool_env())
        assert done.returncode == 0, done.stderr
        return json.loads(out.read_text())

    data = convert()
    image = data["images"][0]
    assert (image["width"], image["height"]) == (DISPLAYED_W, DISPLAYED_H)
    assert data["annotations"][0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.01)
    stored = convert("--exif-orientation", "ignore")  # labels drawn on the stored pixels: today's reading
    assert (stored["images"][0]["width"], stored["images"][0]["height"]) == arrays["stored"].shape[1::-1]


# ------------------------------------------------------------------------------------------ checker


def test_checker_compares_the_json_size_with_the_displayed_size(tmp_path):
    from effdet.cli.check_data import main as check_data_main

    images = tmp_path / "images"
    arrays = phone_jpeg(images / "phone.jpg")
    displayed_json = coco_file(tmp_path, DISPLAYED_W, DISPLAYED_H, RED_DISPLAYED)
    stored_json = coco_file(tmp_path, DISPLAYED_H, DISPLAYED_W, red_box(arrays["stored"]))

    def check(json_path: Path, *extra) -> tuple:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = check_data_main(["--images", str(images), "--annotations", str(json_path), *extra])
        return code, out.getvalue()

    code, text = check(displayed_json)
    assert code == 0 and "size_mismatch" not in text, text
    code, text = check(stored_json)
    assert code == 1 and "[size_mismatch]" in text and "40 x 60" in text, text
    code, text = check(stored_json, "--exif-orientation", "ignore")
    assert code == 0 and "size_mismatch" not in text, text
    code, text = check(displayed_json, "--exif-orientation", "ignore")
    assert code == 1 and "[size_mismatch]" in text, text


# ------------------------------------------------------------------------------------------ inference


@pytest.mark.parametrize("mode", [None, "ignore"])
def test_infer_reads_the_image_as_displayed_unless_the_training_config_says_ignore(tmp_path, mode):
    from tests.helpers.checkpoints import write_training_checkpoint
    from effdet import create_model

    image = tmp_path / "phone.jpg"
    arrays = phone_jpeg(image)
    torch.manual_seed(0)
    model = create_model("efficientdet_lite0", num_classes=1, image_size=64)
    data_section = {"batch_size": 2} if mode is None else {"batch_size": 2, "exif_orientation": mode}
    checkpoint = write_training_checkpoint(tmp_path / "best.ckpt", model, ["thing"], [1], ema=model,
                                           train_config={"data": data_section})
    done = subprocess.run([sys.executable, str(REPO / "tools" / "infer.py"), str(image), "--weights",
                           str(checkpoint), "--out", str(tmp_path / "infer"), "--score-thr", "0.005"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=tool_env())
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "infer" / "detections.json").read_text())[0]
    expected = (DISPLAYED_W, DISPLAYED_H) if mode is None else arrays["stored"].shape[1::-1]
    assert (record["width"], record["height"]) == expected
    boxes = np.asarray(record["boxes"]).reshape(-1, 4)
    assert len(boxes) and (boxes[:, 2] <= expected[0] + 0.01).all() and (boxes[:, 3] <= expected[1] + 0.01).all()
