"""Hostile inputs get a clear error, or a skip that names the file, and never corrupt anything.

One test (or two) per row of the README table "What bad input gets".
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from effdet import Predictor, create_model
from effdet.cli.check_data import main as check_data_main
from effdet.engine.schema import ConfigError, load_train_config
from effdet.data import CocoDetection, eval_transforms, train_transforms
from effdet.imageinfo import ENV_MAX_IMAGE_PIXELS, read_image_header, set_max_image_pixels
from effdet.data.preprocess import ImageReadError, load_image
from effdet.checkpoint.io import UntrustedCheckpointError
from effdet.checkpoint.load import WeightsMismatchError

REPO = Path(__file__).resolve().parents[2]


def run_check(argv) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = check_data_main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def write_set(folder: Path, names: list, size=(40, 60), boxes=None) -> Path:
    """Images ``names`` (those ending in .jpg/.png are real images) and a COCO JSON with one box each."""
    folder.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index, name in enumerate(names, start=1):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            assert cv2.imencode(Path(name).suffix, np.full((*size, 3), 90, np.uint8))[0]
            path.write_bytes(cv2.imencode(Path(name).suffix, np.full((*size, 3), 90, np.uint8))[1].tobytes())
        images.append({"id": index, "file_name": name, "width": size[1], "height": size[0]})
        annotations.append({"id": index, "image_id": index, "category_id": 1,
                            "bbox": (boxes or {}).get(name, [2, 3, 20, 10]), "iscrowd": 0})
    json_path = folder / "instances.json"
    json_path.write_text(json.dumps({"images": images, "annotations": annotations,
                                     "categories": [{"id": 1, "name": "thing"}]}), encoding="utf-8")
    return json_path


def huge_png(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A valid 1-bit PNG of width x height (about 50 kB on disk, 1.2 GB as decoded RGB)."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b""))
    return path


# ------------------------------------------------------------------------------ image files


def test_non_image_and_truncated_files_with_image_extensions_are_named_and_skipped(tmp_path):
    json_path = write_set(tmp_path, ["good.jpg", "text.jpg", "cut.png", "zero.jpg"])
    (tmp_path / "text.jpg").write_text("this is not an image")
    cut = tmp_path / "cut.png"
    cut.write_bytes(cut.read_bytes()[:40])
    (tmp_path / "zero.jpg").write_bytes(b"")
    for name in ("text.jpg", "cut.png", "zero.jpg"):
        with pytest.raises(ImageReadError, match=rf"cannot read image '.*{name}'"):
            load_image(tmp_path / name)
    dataset = CocoDetection(tmp_path, json_path)  # training: skipped by name, the next image is served
    samples = [dataset[i]["image_id"] for i in range(len(dataset))]
    assert set(samples) == {1}
    assert {Path(p).name for p in dataset.failed_files} == {"text.jpg", "cut.png", "zero.jpg"}
    code, out, _ = run_check(["--images", tmp_path, "--annotations", json_path])
    assert code == 1
    for name in ("text.jpg", "cut.png", "zero.jpg"):
        assert any("[unreadable_image]" in line and name in line for line in out.splitlines()), name


def test_one_by_one_image_trains_and_predicts(tmp_path):
    json_path = write_set(tmp_path, ["dot.png"], size=(1, 1), boxes={"dot.png": [0, 0, 1, 1]})
    train = CocoDetection(tmp_path, json_path, transform=train_transforms(64, (0.5, 1.5)))
    for seed in range(8):  # scales below and above 64 px, flipped or not
        torch.manual_seed(seed)
        sample = train[0]
        assert tuple(sample["image"].shape) == (3, 64, 64)
        # the box covers the whole image, so it survives as the visible part of the scaled image: the image is
        # scaled to s x s px, s = 64 x U(0.5, 1.5), and a 64 x 64 window of it is kept
        assert sample["labels"].tolist() == [0] and tuple(sample["boxes"].shape) == (1, 4), sample
        x0, y0, x1, y1 = sample["boxes"][0].tolist()
        s = float(sample["scale"])
        assert 32 <= s <= 96 and 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64, (s, sample["boxes"])
        assert (x1 - x0, y1 - y0) == (pytest.approx(min(s, 64.0), abs=1e-3), pytest.approx(min(s, 64.0), abs=1e-3))
    val = CocoDetection(tmp_path, json_path, transform=eval_transforms(64))[0]
    assert val["scale"] == 64.0 and val["boxes"].tolist() == [[0.0, 0.0, 64.0, 64.0]]
    model = create_model("efficientdet_lite0", num_classes=1, image_size=64)
    predictor = Predictor(model, ["thing"], device="cpu")
    detections = predictor.predict([np.full((1, 1, 3), 200, np.uint8)])[0]
    boxes = detections["boxes"]
    assert len(boxes) > 0 and float(boxes.min()) >= 0 and float(boxes.max()) <= 1.0


def test_a_20000_by_20000_image_is_refused_from_its_header_with_a_settable_limit(tmp_path, monkeypatch):
    bomb = huge_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200_000
    header = read_image_header(bomb)
    assert (header.width, header.height) == (20000, 20000)
    with pytest.raises(ImageReadError, match=r"bomb.png': it is 20000 x 20000 = 400,000,000 pixels, more than the "
                                             r"limit of 178,956,970 \(a decompression-bomb guard"):
        load_image(bomb)
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((100, 100, 3), np.uint8))
    try:
        set_max_image_pixels(5000)  # the limit is settable (and exported to DataLoader workers)
        assert os.environ[ENV_MAX_IMAGE_PIXELS] == "5000"
        with pytest.raises(ImageReadError, match="10,000 pixels, more than the limit of 5,000"):
            load_image(small)
        set_max_image_pixels(0)  # 0: no limit
        assert load_image(small).shape == (100, 100, 3)
    finally:
        set_max_image_pixels(None)
    monkeypatch.setenv(ENV_MAX_IMAGE_PIXELS, "9999")
    with pytest.raises(ImageReadError, match="limit of 9,999"):
        load_image(small)
    monkeypatch.delenv(ENV_MAX_IMAGE_PIXELS)
    json_path = write_set(tmp_path, ["bomb.png", "small.png"], size=(100, 100))
    json_path.write_text(json_path.read_text().replace('"width": 100, "height": 100}',
                                                       '"width": 20000, "height": 20000}', 1))
    code, out, _ = run_check(["--images", tmp_path, "--annotations", json_path, "--level", "headers"])
    assert code == 1 and any("[image_too_large]" in l and "bomb.png" in l for l in out.splitlines())


# ---------------------------------------------------------------------------------- JSON and config


@pytest.mark.parametrize("content, expected", [
    ("[1, 2, 3]", "top level must be a JSON object, got list"),
    ('{"info": {}, "licenses": []}', "has no 'images' key"),
    ('{"images": {}, "annotations": [], "categories": []}', "'images' must be a list"),
    ("\x89PNG not json", "is not (valid JSON|UTF-8 text)"),
])
def test_json_that_is_not_coco_is_refused_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "weird.json"
    path.write_text(content, encoding="latin-1")
    with pytest.raises(ValueError, match=expected) as error:
        CocoDetection(tmp_path, path)
    assert "weird.json" in str(error.value)
    code, out, _ = run_check(["--images", tmp_path, "--annotations", path])
    assert code == 1 and ("[not_coco]" in out or "[not_json]" in out) and "weird.json" in out


def test_train_stops_on_a_non_coco_json_before_building_anything(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "a.json").write_text('{"annotations": []}')
    command = [sys.executable, str(REPO / "tools" / "train.py"), str(REPO / "configs" / "demo.yaml"),
               f"data.root={tmp_path}", "data.train.images=images", "data.train.annotations=a.json",
               "data.val.images=images", "data.val.annotations=a.json", f"output_dir={tmp_path / 'run'}"]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    assert "[not_coco]" in completed.stderr and "a.json" in completed.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("override, expected", [
    ("data.batch_size=eight", r"bad value for config key 'data.batch_size'"),
    ("optim.lr=[0.1]", r"bad value for config key 'optim.lr'"),
    ("data.format=xml", r"config key 'data.format' is 'xml'; valid choices: \['coco', 'voc', 'yolo'\]"),
    ("data.allow_outside_images=maybe", r"bad value for config key 'data.allow_outside_images'"),
    ("data.max_image_pixels=lots", r"bad value for config key 'data.max_image_pixels'"),
])
def test_a_config_value_of_the_wrong_type_names_the_key(override, expected):
    with pytest.raises(ConfigError, match=expected):
        load_train_config(str(REPO / "configs" / "demo.yaml"), [override])


# ------------------------------------------------------------------------------------------ paths


def test_paths_with_spaces_and_unicode(tmp_path):
    folder = tmp_path / "my data" / "ünïcödé 画像"
    json_path = write_set(folder, ["a b.jpg", "größe ü.png", "sub dir/日本 語.jpg"])
    dataset = CocoDetection(folder, json_path, transform=eval_transforms(64))
    assert [dataset[i]["image_id"] for i in range(3)] == [1, 2, 3] and not dataset.failed_files
    code, out, _ = run_check(["--images", folder, "--annotations", json_path])
    assert code == 0, out
    model = create_model("efficientdet_lite0", num_classes=1, image_size=64)
    detections = Predictor(model, ["thing"], device="cpu").predict([str(folder / "sub dir" / "日本 語.jpg")])
    assert len(detections) == 1


def test_file_names_outside_the_images_folder_are_refused_unless_allowed(tmp_path):
    images = tmp_path / "images"
    outside = tmp_path / "secret.jpg"
    cv2.imwrite(str(outside), np.zeros((40, 60, 3), np.uint8))
    json_path = write_set(images, ["ok.jpg"])
    data = json.loads(json_path.read_text())
    data["images"].append(dict(data["images"][0], id=2, file_name="../secret.jpg"))
    data["images"].append(dict(data["images"][0], id=3, file_name=str(outside)))
    json_path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"image id 2: file_name '\.\./secret\.jpg' leaves the images folder"):
        CocoDetection(images, json_path)
    code, out, _ = run_check(["--images", images, "--annotations", json_path])
    assert code == 1
    assert sum("[path_outside]" in line for line in out.splitlines()) == 2 and "is an absolute path" in out
    allowed = CocoDetection(images, json_path, allow_outside_images=True)
    assert len(allowed) == 3 and allowed[2]["image"].shape == (40, 60, 3)
    assert run_check(["--images", images, "--annotations", json_path, "--allow-outside-images"])[0] == 0
    assert load_train_config(str(REPO / "configs" / "demo.yaml"), ["data.allow_outside_images=true"]).data.allow_outside_images


# ------------------------------------------------------------------------------------ checkpoints


def save_training_checkpoint(path: Path, name: str, num_classes: int) -> Path:
    from tests.helpers.checkpoints import write_training_checkpoint

    model = create_model(name, num_classes=num_classes, image_size=64)
    write_training_checkpoint(path, model, [f"c{i}" for i in range(num_classes)], list(range(1, num_classes + 1)))
    return path


def test_a_checkpoint_of_another_variant_or_number_of_classes_is_refused_with_the_fix(tmp_path):
    checkpoint = save_training_checkpoint(tmp_path / "lite0.ckpt", "efficientdet_lite0", 3)
    with pytest.raises(WeightsMismatchError, match=r"lite0.ckpt does not fit 'efficientdet_lite1':\n.*\n  "
                                                   r"fpn_channels: checkpoint 64, 'efficientdet_lite1' 88"):
        create_model("efficientdet_lite1", num_classes=3, image_size=64, weights=checkpoint)
    with pytest.raises(WeightsMismatchError, match="reset_class_head=True") as error:
        create_model("efficientdet_lite0", num_classes=5, image_size=64, weights=checkpoint)
    assert "class_net.predict" in str(error.value)
    model = create_model("efficientdet_lite0", num_classes=5, image_size=64, weights=checkpoint, reset_class_head=True)
    assert model.config.num_classes == 5


class _RunsCode:
    """Pickles as a call of ``Path.touch(marker)``: loading the file with full unpickling would run it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_wants_to_run_code_on_load_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "code-ran"
    model = create_model("efficientdet_lite0", num_classes=1, image_size=64)
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": model.state_dict(), "payload": _RunsCode(marker)}, evil)
    assert not marker.exists()
    with pytest.raises(UntrustedCheckpointError, match="unpickling can run any code"):
        create_model("efficientdet_lite0", num_classes=1, image_size=64, weights=evil)
    with pytest.raises(ValueError, match="refusing to load"):
        Predictor.from_checkpoint(evil, device="cpu")
    assert not marker.exists()


def test_eval_tool_refuses_a_code_running_checkpoint(tmp_path):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": _RunsCode(marker)}, evil)
    images = tmp_path / "images"
    json_path = write_set(images, ["a.jpg"])
    completed = subprocess.run([sys.executable, str(REPO / "tools" / "eval.py"), "--weights", str(evil),
                                "--images", str(images), "--annotations", str(json_path), "--out",
                                str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 2
    assert "refusing to load" in completed.stderr and "evil.ckpt" in completed.stderr
    assert not marker.exists()
