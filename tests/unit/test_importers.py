"""Pascal VOC and YOLO importers: round trips within 0.5 px, tools/convert_dataset.py, data.format=voc|yolo training."""
from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from effdet.cli.convert_dataset import main as convert_main
from effdet.data.voc import read_voc_xml, voc_sources, voc_to_coco
from effdet.data.yolo import coco_to_yolo, labels_dir_for, read_class_names, yolo_to_coco
from tests.helpers.datasets import write_voc, write_yolo

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    from effdet.data import make_demo_dataset

    return make_demo_dataset(tmp_path_factory.mktemp("demo"), num_train=8, num_val=4, width_range=(96, 160),
                             height_range=(64, 128), object_size=(16, 48))


def boxes_by_file(data: dict) -> dict:
    """file name -> sorted list of (category name, x, y, w, h)."""
    names = {c["id"]: c["name"] for c in data["categories"]}
    files = {i["id"]: i["file_name"] for i in data["images"]}
    result: dict = {name: [] for name in files.values()}
    for ann in data["annotations"]:
        result[files[ann["image_id"]]].append((names[ann["category_id"]], *[float(v) for v in ann["bbox"]]))
    return {k: sorted(v) for k, v in result.items()}


def assert_same_boxes(original: dict, converted: dict, tolerance: float = 0.5) -> float:
    a, b = boxes_by_file(original), boxes_by_file(converted)
    assert a.keys() == b.keys()
    worst = 0.0
    for name in a:
        assert [r[0] for r in a[name]] == [r[0] for r in b[name]], name
        if a[name]:
            difference = np.abs(np.array([r[1:] for r in a[name]]) - np.array([r[1:] for r in b[name]])).max()
            worst = max(worst, float(difference))
    assert worst <= tolerance
    return worst


def load(path) -> dict:
    return json.loads(Path(path).read_text())


def test_coco_to_yolo_and_back_keeps_boxes_within_half_a_pixel(demo, tmp_path):
    original = load(demo["train_annotations"])
    original["annotations"][0]["bbox"] = [10.25, 7.5, 33.3, 20.7]  # sub-pixel values too
    names = coco_to_yolo(original, tmp_path / "labels")
    assert names == ["circle", "square", "triangle"]  # category ids 1, 3, 7 ascending
    back = yolo_to_coco(demo["train_images"], tmp_path / "labels", tmp_path / "labels" / "classes.txt")
    worst = assert_same_boxes(original, back)
    assert worst < 0.01
    assert [c["name"] for c in back["categories"]] == names


# A VOC file written by hand, not by write_voc (whose convention is the reader's inverse): VOC boxes are 1-based
# pixel indices, inclusive at both ends (the devkit's convention; a box over a whole W x H image is 1 1 W H). Each
# object's pixels are painted into the image at 0-based rows/columns, so the expected COCO box is where they are.
HAND_WRITTEN_VOC = """<annotation>
  <folder>VOC2007</folder>
  <filename>000001.png</filename>
  <size><width>64</width><height>48</height><depth>3</depth></size>
  <object>
    <name>dog</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>
    <bndbox><xmin>48</xmin><ymin>12</ymin><xmax>64</xmax><ymax>40</ymax></bndbox>
  </object>
  <object>
    <name>cat</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>5</ymax></bndbox>
  </object>
</annotation>
"""
HAND_WRITTEN_PIXELS = {"dog": (slice(11, 40), slice(47, 64)),  # rows 11..39, columns 47..63 (the right edge)
                       "cat": (slice(0, 5), slice(0, 10))}  # rows 0..4, columns 0..9 (the top-left corner)


def test_voc_boxes_are_1_based_inclusive_pixels(tmp_path):
    import cv2

    root = tmp_path / "VOC"
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True)
    (root / "Annotations" / "000001.xml").write_text(HAND_WRITTEN_VOC)
    (root / "ImageSets" / "Main" / "train.txt").write_text("000001\n")
    image = np.zeros((48, 64, 3), np.uint8)
    expected = {}
    for value, (name, (rows, columns)) in enumerate(HAND_WRITTEN_PIXELS.items(), start=1):
        image[rows, columns] = 100 * value
        ys, xs = np.nonzero((image == 100 * value).all(axis=2))
        expected[name] = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
    assert expected == {"dog": [47, 11, 17, 29], "cat": [0, 0, 10, 5]}
    cv2.imwrite(str(root / "JPEGImages" / "000001.png"), image)

    files, images_dir = voc_sources(root / "ImageSets" / "Main" / "train.txt")
    assert files == [root / "Annotations" / "000001.xml"] and images_dir == root / "JPEGImages"
    converted = voc_to_coco(files, images_dir)
    assert [c["name"] for c in converted["categories"]] == ["cat", "dog"]
    assert [(i["file_name"], i["width"], i["height"]) for i in converted["images"]] == [("000001.png", 64, 48)]
    names = {c["id"]: c["name"] for c in converted["categories"]}
    assert {names[a["category_id"]]: a["bbox"] for a in converted["annotations"]} == expected


def test_yolo_data_yaml_polygon_lines_and_label_errors(tmp_path, demo):
    original = load(demo["val_annotations"])
    write_yolo(original, Path(demo["val_images"]), tmp_path, "val")
    assert labels_dir_for(tmp_path / "images" / "val") == tmp_path / "labels" / "val"
    assert read_class_names(tmp_path / "data.yaml") == ["circle", "square", "triangle"]
    label = next(p for p in sorted((tmp_path / "labels" / "val").glob("*.txt")) if p.read_text().strip())
    label.write_text("1 0.1 0.2 0.5 0.2 0.5 0.6 0.1 0.6\n")  # a polygon: its bounding box is the object
    converted = yolo_to_coco(tmp_path / "images" / "val", None, tmp_path / "data.yaml")
    image = next(i for i in converted["images"] if Path(i["file_name"]).stem == label.stem)
    box = next(a["bbox"] for a in converted["annotations"] if a["image_id"] == image["id"])
    assert box == pytest.approx([0.1 * image["width"], 0.2 * image["height"], 0.4 * image["width"],
                                 0.4 * image["height"]], abs=0.01)
    label.write_text("5 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValueError, match=rf"{label.name}:1: class 5 is not an index 0..2"):
        yolo_to_coco(tmp_path / "images" / "val", None, tmp_path / "data.yaml")
    label.write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(ValueError, match=rf"{label.name}:1: 4 numbers"):
        yolo_to_coco(tmp_path / "images" / "val", None, tmp_path / "data.yaml")


def test_voc_xml_errors_name_the_file(tmp_path):
    bad = tmp_path / "a.xml"
    bad.write_text("<annotation><object><name>cat</name><bndbox><xmin>x</xmin></bndbox></object></annotation>")
    with pytest.raises(ValueError, match=r"a.xml object 1: <xmin> is 'x', not a number"):
        read_voc_xml(bad)
    bad.write_text("<annotation><object>")
    with pytest.raises(ValueError, match="a.xml' is not valid XML"):
        read_voc_xml(bad)


def test_coco_to_yolo_refuses_file_names_that_leave_the_labels_folder(tmp_path):
    """Issue 20.5: the COCO -> YOLO writer turned `file_name` into a path as it was: `../x.jpg` and absolute names
    wrote label files outside the labels folder."""
    labels = tmp_path / "out" / "labels"
    for name in ("../../escape.jpg", str(tmp_path / "absolute.jpg")):
        data = {"images": [{"id": 1, "file_name": "fine.jpg", "width": 10, "height": 10},
                           {"id": 2, "file_name": name, "width": 10, "height": 10}],
                "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [1, 1, 4, 4]}],
                "categories": [{"id": 1, "name": "thing"}]}
        with pytest.raises(ValueError, match=re.escape(f"'{name}'")):
            coco_to_yolo(data, labels)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "absolute.txt").exists()
    assert sorted(p.name for p in tmp_path.rglob("*.txt")) == []  # refused before anything is written


def test_voc_filename_that_leaves_the_images_folder_is_refused(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    import cv2

    cv2.imwrite(str(tmp_path / "secret.jpg"), np.zeros((8, 8, 3), np.uint8))  # exists, outside JPEGImages
    xml = tmp_path / "Annotations" / "a.xml"
    xml.write_text("<annotation><filename>../secret.jpg</filename><object><name>cat</name><bndbox><xmin>1</xmin>"
                   "<ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object></annotation>")
    with pytest.raises(ValueError, match=r"a\.xml.*'\.\./secret\.jpg'"):
        voc_to_coco([xml], tmp_path / "JPEGImages")


def run_convert(argv) -> tuple:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = convert_main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def test_convert_dataset_tool_writes_coco_json(demo, tmp_path):
    original = load(demo["val_annotations"])
    write_voc(original, Path(demo["val_images"]), tmp_path / "VOC", "val")
    code, out, err = run_convert(["--from", "voc", tmp_path / "VOC", "--out", tmp_path / "voc.json"])
    assert code == 0, err
    assert "categories ['circle', 'square', 'triangle']" in out
    assert_same_boxes(original, load(tmp_path / "voc.json"))
    write_yolo(original, Path(demo["val_images"]), tmp_path / "Y", "val")
    code, out, err = run_convert(["--from", "yolo", tmp_path / "Y" / "data.yaml", "--split", "val",
                                  "--out", tmp_path / "yolo.json"])
    assert code == 0, err
    assert_same_boxes(original, load(tmp_path / "yolo.json"))
    code, _, err = run_convert(["--from", "yolo", tmp_path / "nowhere", "--out", tmp_path / "x.json"])
    assert code == 2 and "does not exist" in err


def convert_tool(argv) -> subprocess.CompletedProcess:
    """`python tools/convert_dataset.py ...` as a user runs it."""
    from tests.helpers.env import tool_env

    return subprocess.run([sys.executable, str(REPO / "tools" / "convert_dataset.py"), *[str(a) for a in argv]],
                          cwd=REPO, capture_output=True, text=True, timeout=600, env=tool_env())


def yolo_root(demo, root: Path) -> dict:
    """The standard YOLO layout ROOT/images/{train,val}, ROOT/labels/{train,val}, ROOT/data.yaml; returns the
    number of images and of label lines (objects), counted from the files."""
    write_yolo(load(demo["train_annotations"]), Path(demo["train_images"]), root, "train")
    write_yolo(load(demo["val_annotations"]), Path(demo["val_images"]), root, "val")
    lines = sum(1 for p in (root / "labels").rglob("*.txt") for line in p.read_text().splitlines() if line.strip())
    return {"images": len(list((root / "images").rglob("*.jpg"))), "boxes": lines}


def test_yolo_root_folder_finds_every_label_by_the_images_to_labels_rule(demo, tmp_path):
    """Issue 20.2: `convert_dataset.py --from yolo ROOT` found every image and no label ("N images, 0 boxes",
    exit 0). Each image's label is where YOLO tools look: the last `images` part of its path becomes `labels`."""
    root = tmp_path / "yolo"
    counted = yolo_root(demo, root)
    assert counted["boxes"] > 0
    done = convert_tool(["--from", "yolo", root, "--out", tmp_path / "root.json"])
    assert done.returncode == 0, done.stderr
    converted = load(tmp_path / "root.json")
    assert len(converted["images"]) == counted["images"]
    assert len(converted["annotations"]) == counted["boxes"]
    assert f"{counted['images']} images, {counted['boxes']} boxes" in done.stdout
    # the same boxes as the original COCO files (file names are now relative to ROOT: images/<split>/<name>)
    original = load(demo["train_annotations"])
    val = load(demo["val_annotations"])
    offset = max(i["id"] for i in original["images"])
    original["images"] += [dict(i, id=i["id"] + offset) for i in val["images"]]
    original["annotations"] += [dict(a, id=a["id"] + 10 ** 6, image_id=a["image_id"] + offset)
                                for a in val["annotations"]]
    for image in original["images"]:
        split = "train" if image["file_name"].startswith("train") else "val"
        image["file_name"] = f"images/{split}/{image['file_name']}"
    assert_same_boxes(original, converted)


def test_yolo_images_without_any_label_stop_with_where_labels_were_looked_for(demo, tmp_path):
    root = tmp_path / "yolo"
    yolo_root(demo, root)
    shutil.rmtree(root / "labels")
    done = convert_tool(["--from", "yolo", root, "--classes", root / "data.yaml", "--out", tmp_path / "none.json"])
    assert done.returncode != 0 and not (tmp_path / "none.json").exists(), done.stdout
    first = sorted((root / "images" / "train").glob("*.jpg"))[0]
    assert str(root / "labels" / "train" / f"{first.stem}.txt") in done.stderr, done.stderr


def test_training_with_data_format_yolo_follows_the_same_label_rule(demo, tmp_path):
    """`data.format=yolo` in training: labels found by the images -> labels rule (annotations: null), and a split
    without a single label stops with where they were looked for."""
    from effdet.data.formats import dataset_sources
    from effdet.engine.schema import load_train_config

    root = tmp_path / "yolo"
    yolo_root(demo, root)
    overrides = ["data.format=yolo", f"data.root={root}", "data.classes=data.yaml", "data.train.images=images/train",
                 "data.train.annotations=null", "data.val.images=images/val", "data.val.annotations=null"]
    cfg = load_train_config(str(REPO / "configs" / "demo.yaml"), overrides)
    sources = dataset_sources(cfg.data)
    for split in ("train", "val"):
        lines = sum(1 for p in (root / "labels" / split).glob("*.txt") for line in p.read_text().splitlines()
                    if line.strip())
        assert len(sources[split]["annotations_data"]["annotations"]) == lines > 0
    shutil.rmtree(root / "labels" / "val")
    with pytest.raises(ValueError, match=str(root / "labels" / "val")):
        dataset_sources(cfg.data)


def train_and_eval(tmp_path: Path, overrides: list, images: Path, coco_json: Path) -> dict:
    run = tmp_path / "run"
    command = [sys.executable, str(REPO / "tools" / "train.py"), str(REPO / "configs" / "demo.yaml"),
               *overrides, f"output_dir={run}", "trainer.max_epochs=1", "model.image_size=64",
               "model.pretrained_backbone=null", "data.num_workers=0", "data.batch_size=4"]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    metrics = load(run / "metrics.json")
    evaluated = subprocess.run(
        [sys.executable, str(REPO / "tools" / "eval.py"), "--weights", str(run / "checkpoints" / "best.ckpt"),
         "--images", str(images), "--annotations", str(coco_json), "--out", str(tmp_path / "eval"),
         "--workers", "0"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    return {"train": metrics, "eval": load(tmp_path / "eval" / "metrics.json"), "stdout": evaluated.stdout}


@pytest.mark.slow
def test_voc_fixture_trains_with_data_format_voc_and_evaluates_with_its_names(demo, tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    write_voc(load(demo["train_annotations"]), Path(demo["train_images"]), voc, "train")
    write_voc(load(demo["val_annotations"]), Path(demo["val_images"]), voc, "val")
    converted = tmp_path / "val.json"
    assert run_convert(["--from", "voc", voc / "ImageSets/Main/val.txt", "--out", converted])[0] == 0
    result = train_and_eval(tmp_path, [
        "data.format=voc", "data.root=null", f"data.train.images={voc / 'JPEGImages'}",
        f"data.train.annotations={voc / 'ImageSets/Main/train.txt'}", f"data.val.images={voc / 'JPEGImages'}",
        f"data.val.annotations={voc / 'ImageSets/Main/val.txt'}"],
        voc / "JPEGImages", converted)
    assert set(result["train"]["per_class"]) == {"circle", "square", "triangle"}
    assert set(result["eval"]["per_class"]) == {"circle", "square", "triangle"}
    assert result["eval"]["per_class"] == pytest.approx(result["train"]["per_class"], abs=1e-6)


@pytest.mark.slow
def test_yolo_fixture_trains_with_data_format_yolo_and_evaluates_with_its_names(demo, tmp_path):
    root = tmp_path / "yolo"
    write_yolo(load(demo["train_annotations"]), Path(demo["train_images"]), root, "train")
    write_yolo(load(demo["val_annotations"]), Path(demo["val_images"]), root, "val")
    converted = tmp_path / "val.json"
    assert run_convert(["--from", "yolo", root / "data.yaml", "--split", "val", "--out", converted])[0] == 0
    result = train_and_eval(tmp_path, [
        "data.format=yolo", f"data.root={root}", "data.train.images=images/train",
        "data.train.annotations=labels/train", "data.val.images=images/val", "data.val.annotations=labels/val",
        "data.classes=data.yaml"], root / "images" / "val", converted)
    assert set(result["train"]["per_class"]) == {"circle", "square", "triangle"}
    assert result["eval"]["per_class"] == pytest.approx(result["train"]["per_class"], abs=1e-6)
