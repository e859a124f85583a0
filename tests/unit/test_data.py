"""COCO dataset validation, image loading, collate, demo data, and multi-worker loading."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional

import cv2
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from effdet.data import (
    CocoDetection,
    collate_detection,
    eval_transforms,
    make_demo_dataset,
    train_transforms,
    worker_init_fn,
)
from effdet.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE_MEAN,
    LITE_STD,
    ImageReadError,
    load_image,
    normalize,
    to_rgb,
)

# ----------------------------------------------------------------------------- helpers


def _write_jpeg(path: Path, height: int = 48, width: int = 64, value: int = 128) -> None:
    image = np.full((height, width, 3), value, np.uint8)
    image[: height // 2, : width // 2] = (0, 0, 255)  # BGR red in the top-left quarter
    assert cv2.imwrite(str(path), image)


def _image(image_id: int, name: str, height: int = 48, width: int = 64) -> Dict[str, Any]:
    return {"id": image_id, "file_name": name, "width": width, "height": height}


def _ann(ann_id: int, image_id: int, category_id: int, bbox: List[float], iscrowd: int = 0) -> Dict[str, Any]:
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "iscrowd": iscrowd}


def _dataset_files(
    tmp_path: Path,
    images: List[Dict[str, Any]],
    annotations: List[Dict[str, Any]],
    categories: Optional[List[Dict[str, Any]]] = None,
    write_images: bool = True,
) -> tuple:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    if write_images:
        for entry in images:
            _write_jpeg(folder / entry["file_name"], entry["height"], entry["width"])
    categories = categories if categories is not None else [{"id": 1, "name": "thing"}]
    json_path = tmp_path / "instances.json"
    json_path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return folder, json_path


# ----------------------------------------------------------------------------- category mapping


def test_non_contiguous_category_ids_map_to_contiguous_labels_and_back(tmp_path):
    categories = [{"id": 90, "name": "zebra"}, {"id": 5, "name": "apple"}, {"id": 17, "name": "mouse"}]
    images = [_image(1, "a.jpg")]
    annotations = [_ann(1, 1, 90, [1, 1, 10, 10]), _ann(2, 1, 5, [20, 2, 10, 10]), _ann(3, 1, 17, [3, 30, 5, 5])]
    folder, json_path = _dataset_files(tmp_path, images, annotations, categories)
    dataset = CocoDetection(folder, json_path)
    assert dataset.category_ids == [5, 17, 90]
    assert dataset.class_names == ["apple", "mouse", "zebra"]
    assert dataset.label_of_category == {5: 0, 17: 1, 90: 2}
    sample = dataset[0]
    np.testing.assert_array_equal(sample["labels"], [2, 0, 1])
    assert [dataset.category_ids[label] for label in sample["labels"]] == [90, 5, 17]
    np.testing.assert_allclose(sample["boxes"], [[1, 1, 11, 11], [20, 2, 30, 12], [3, 30, 8, 35]])
    assert sample["image"].shape == (48, 64, 3) and sample["image"].dtype == np.uint8
    np.testing.assert_allclose(sample["image"][0, 0], [255, 0, 0], atol=8)  # red, in RGB order (JPEG)
    assert sample["orig_size"] == (48, 64) and sample["scale"] == 1.0 and sample["image_id"] == 1
    # The COCO object keeps the original ids, for evaluation.
    assert sorted(dataset.coco.getCatIds()) == [5, 17, 90]
    assert dataset.coco.loadAnns(dataset.coco.getAnnIds(imgIds=[1]))[0]["category_id"] == 90


def test_unknown_category_fails_naming_annotation_and_category(tmp_path):
    folder, json_path = _dataset_files(
        tmp_path, [_image(1, "a.jpg")], [_ann(1, 1, 1, [1, 1, 5, 5]), _ann(77, 1, 4, [1, 1, 5, 5])]
    )
    with pytest.raises(ValueError) as error:
        CocoDetection(folder, json_path)
    message = str(error.value)
    assert "instances.json" in message and "annotation id 77" in message and "category_id 4" in message
    assert "[1]" in message  # the valid ids


# ----------------------------------------------------------------------------- boxes


def test_invalid_boxes_dropped_clipped_and_counted(tmp_path, caplog):
    annotations = [
        _ann(1, 1, 1, [10, 10, -5, 8]),  # negative width
        _ann(2, 1, 1, [10, 10, 5, 0]),  # zero height
        _ann(3, 1, 1, [10, 10, float("nan"), 5]),  # non-finite
        _ann(4, 1, 1, [50, -4, 30, 20]),  # partly outside: clipped to [50, 0, 64, 16]
        _ann(5, 1, 1, [63.5, 5, 10, 10]),  # only 0.5 px inside: degenerate after clipping
        _ann(6, 1, 1, [2, 3, 4, 5]),  # fine
        _ann(7, 1, 1, [1, 2, 3]),  # malformed
    ]
    folder, json_path = _dataset_files(tmp_path, [_image(1, "a.jpg")], annotations)
    with caplog.at_level(logging.INFO, logger="effdet.data"):
        dataset = CocoDetection(folder, json_path)
    report = dataset.report
    assert report["invalid_boxes"] == 4 and report["invalid_boxes_examples"] == [1, 2, 3, 7]
    assert report["clipped_boxes"] == 2 and report["clipped_boxes_examples"] == [4, 5]
    assert report["degenerate_boxes"] == 1 and report["degenerate_boxes_examples"] == [5]
    assert report["objects"] == 2
    boxes = dataset[0]["boxes"]
    np.testing.assert_allclose(boxes, [[50, 0, 64, 16], [2, 3, 6, 8]])
    assert dataset.coco.loadAnns([4])[0]["bbox"] == [50, 0, 14, 16]
    assert not dataset.coco.getAnnIds(imgIds=[1]) == [] and 1 not in dataset.coco.anns
    assert "4 boxes with width/height <= 0" in caplog.text and "2 objects" in caplog.text


def test_orphan_annotations_counted_and_images_without_objects_kept(tmp_path):
    images = [_image(1, "a.jpg"), _image(2, "b.jpg")]
    annotations = [_ann(1, 1, 1, [1, 1, 5, 5]), _ann(2, 999, 1, [1, 1, 5, 5]), _ann(3, 998, 1, [1, 1, 5, 5])]
    folder, json_path = _dataset_files(tmp_path, images, annotations)
    dataset = CocoDetection(folder, json_path)
    assert dataset.report["orphan_annotations"] == 2
    assert dataset.report["orphan_annotations_examples"] == [2, 3]
    assert len(dataset) == 2 and dataset.image_ids == [1, 2]
    assert dataset.report["images_without_objects"] == 1
    empty = dataset[1]
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)


def test_crowd_annotations_are_ignore_regions_not_objects(tmp_path):
    annotations = [_ann(1, 1, 1, [1, 1, 5, 5]), _ann(2, 1, 1, [10, 10, 20, 20], iscrowd=1)]
    folder, json_path = _dataset_files(tmp_path, [_image(1, "a.jpg")], annotations)
    dataset = CocoDetection(folder, json_path)
    sample = dataset[0]
    np.testing.assert_allclose(sample["boxes"], [[1, 1, 6, 6]])
    np.testing.assert_allclose(sample["crowd_boxes"], [[10, 10, 30, 30]])
    assert dataset.report["crowd_regions"] == 1 and dataset.report["objects"] == 1


# ----------------------------------------------------------------------------- structure errors


def test_empty_dataset_fails_naming_json_and_folder(tmp_path):
    folder, json_path = _dataset_files(tmp_path, [_image(1, "gone.jpg")], [], write_images=False)
    with pytest.raises(ValueError, match="empty dataset") as error:
        CocoDetection(folder, json_path)
    assert str(json_path) in str(error.value) and str(folder) in str(error.value)


@pytest.mark.parametrize(
    "content, expected",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"images": [], "categories": []}), "'annotations'"),
        (json.dumps({"images": [{"id": 1, "file_name": "a.jpg", "width": 4}], "annotations": [],
                     "categories": [{"id": 1, "name": "x"}]}), "'height'"),
        (json.dumps({"images": [], "annotations": [{"id": 3, "image_id": 1, "category_id": 1}],
                     "categories": [{"id": 1, "name": "x"}]}), "annotations[0] (id 3) has no 'bbox'"),
        (json.dumps({"images": [_image(1, "a.jpg"), _image(1, "b.jpg")], "annotations": [],
                     "categories": [{"id": 1, "name": "x"}]}), "duplicate image id 1"),
    ],
)
def test_malformed_json_fails_naming_file_and_key(tmp_path, content, expected):
    json_path = tmp_path / "broken.json"
    json_path.write_text(content)
    with pytest.raises(ValueError) as error:
        CocoDetection(tmp_path, json_path)
    assert "broken.json" in str(error.value) and expected in str(error.value)


# ----------------------------------------------------------------------------- image files


def test_grayscale_rgba_and_16bit_png_load_as_rgb_uint8(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    gray = np.full((20, 30), 200, np.uint8)
    bgra = np.zeros((20, 30, 4), np.uint8)
    bgra[...] = (10, 20, 30, 0)  # fully transparent: alpha is dropped, colour kept
    deep = np.full((20, 30, 3), 257 * 100, np.uint16)
    deep[0, 0] = (65535, 0, 257 * 7)
    assert cv2.imwrite(str(folder / "gray.png"), gray)
    assert cv2.imwrite(str(folder / "rgba.png"), bgra)
    assert cv2.imwrite(str(folder / "deep.png"), deep)
    images = [_image(1, "gray.png", 20, 30), _image(2, "rgba.png", 20, 30), _image(3, "deep.png", 20, 30)]
    _, json_path = _dataset_files(tmp_path, images, [], write_images=False)
    dataset = CocoDetection(folder, json_path)
    loaded = [dataset[i]["image"] for i in range(3)]
    for image in loaded:
        assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    assert (loaded[0] == 200).all()
    assert (loaded[1] == (30, 20, 10)).all()
    assert (loaded[2][1:, 1:] == 100).all()
    np.testing.assert_array_equal(loaded[2][0, 0], [7, 0, 255])  # BGR -> RGB, 16 -> 8 bit


def test_missing_file_skipped_at_construction_with_its_name(tmp_path, caplog):
    images = [_image(1, "a.jpg"), _image(2, "missing_one.jpg")]
    folder, json_path = _dataset_files(tmp_path, images, [_ann(1, 2, 1, [1, 1, 4, 4])])
    (folder / "missing_one.jpg").unlink()
    with caplog.at_level(logging.WARNING, logger="effdet.data"):
        dataset = CocoDetection(folder, json_path)
    assert len(dataset) == 1 and dataset.image_ids == [1]
    assert dataset.report["missing_files"] == 1
    assert dataset.report["missing_files_examples"] == ["missing_one.jpg"]
    assert "missing_one.jpg" in caplog.text
    assert dataset.report["orphan_annotations"] == 0  # its annotation is not an orphan
    assert dataset.coco.getImgIds() == [1]
    unchecked = CocoDetection(folder, json_path, check_files=False)
    assert len(unchecked) == 2


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def test_corrupt_jpeg_is_skipped_at_load_with_its_name(tmp_path, caplog):
    images = [_image(i, f"img{i}.jpg") for i in (1, 2, 3)]
    folder, json_path = _dataset_files(tmp_path, images, [])
    _truncate(folder / "img2.jpg")
    dataset = CocoDetection(folder, json_path)
    with caplog.at_level(logging.WARNING, logger="effdet.data"):
        sample = dataset[1]
        again = dataset[1]
    assert sample["image_id"] == 3 and again["image_id"] == 3  # the next valid sample
    assert caplog.text.count("img2.jpg") == 1  # warned once per file
    assert any("img2.jpg" in name for name in dataset.failed_files)


def test_all_images_corrupt_raises_clear_error(tmp_path):
    images = [_image(i, f"img{i}.jpg") for i in (1, 2)]
    folder, json_path = _dataset_files(tmp_path, images, [])
    for entry in images:
        (folder / entry["file_name"]).write_bytes(b"this is not an image")
    dataset = CocoDetection(folder, json_path)
    with pytest.raises(RuntimeError, match="could not load any of 2 consecutive images"):
        dataset[0]


def test_load_image_errors_name_the_file_and_survive_pickling(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for path, reason in [(text, "cannot decode"), (empty, "empty"), (tmp_path / "nope.jpg", "does not exist"),
                         (tmp_path, "not a regular file")]:
        with pytest.raises(ImageReadError) as error:
            load_image(path)
        assert str(path) in str(error.value) and reason in str(error.value)
        clone = pickle.loads(pickle.dumps(error.value))
        assert str(clone) == str(error.value) and clone.path == str(path)


def test_truncated_jpeg_detected_but_data_after_end_marker_accepted(tmp_path):
    image = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    encoded = cv2.imencode(".jpg", image)[1].tobytes()
    with pytest.raises(ImageReadError, match="truncated"):
        load_image(encoded[:-2])  # everything but the end-of-image marker
    appended = load_image(encoded + b"\x00\x00ftypmp42 appended video")
    np.testing.assert_array_equal(appended, load_image(encoded))


def test_to_rgb_and_normalize():
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 255
    assert (to_rgb(bgr, bgr=True)[..., 2] == 255).all() and (to_rgb(bgr, bgr=False)[..., 0] == 255).all()
    assert to_rgb(np.ones((2, 3), np.float32), bgr=False).max() == 255
    images = torch.full((2, 3, 4, 5), 255, dtype=torch.uint8)
    out = normalize(images)
    assert out.dtype == torch.float32 and out.shape == images.shape and out.device == images.device
    expected = [(255 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor(expected))
    lite = normalize(images[0].float(), LITE_MEAN, LITE_STD)
    assert lite.shape == (3, 4, 5) and torch.allclose(lite, torch.full_like(lite, 128 / 128))


def test_numpy_normalize_to_chw_equals_torch_normalize():
    """The torch-free runtime's normalisation (per-plane multiply-add) equals normalize() on the same pixels."""
    from effdet.data.preprocess import normalize_to_chw

    rng = np.random.default_rng(0)
    hwc = [rng.integers(0, 256, (6, 7, 3), dtype=np.uint8) for _ in range(2)]
    out = normalize_to_chw(hwc, IMAGENET_MEAN, IMAGENET_STD)
    assert out.dtype == np.float32 and out.shape == (2, 3, 6, 7) and out.flags["C_CONTIGUOUS"]
    expected = normalize(torch.from_numpy(np.stack(hwc)).permute(0, 3, 1, 2), IMAGENET_MEAN, IMAGENET_STD)
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------- transforms + collate


def test_dataset_with_transform_returns_network_input(tmp_path):
    images = [_image(1, "a.jpg", 100, 200)]
    folder, json_path = _dataset_files(tmp_path, images, [_ann(1, 1, 1, [20, 10, 40, 30])])
    dataset = CocoDetection(folder, json_path, transform=eval_transforms(64))
    sample = dataset[0]
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 64, 64)
    assert sample["scale"] == pytest.approx(0.32) and sample["orig_size"] == (100, 200)
    torch.testing.assert_close(sample["boxes"], torch.tensor([[6.4, 3.2, 19.2, 12.8]]))


def test_collate_pads_boxes_labels_and_crowds():
    def sample(count: int, crowds: int, image_id: int) -> Dict[str, Any]:
        return {
            "image": torch.full((3, 8, 8), image_id, dtype=torch.uint8),
            "boxes": torch.arange(count * 4, dtype=torch.float32).reshape(count, 4) + 1,
            "labels": torch.arange(count),
            "crowd_boxes": np.ones((crowds, 4), np.float32),
            "image_id": image_id,
            "orig_size": (10 * image_id, 20),
            "scale": 0.5 * image_id,
        }

    batch = collate_detection([sample(2, 0, 1), sample(0, 0, 2), sample(3, 1, 3)])
    assert batch["images"].shape == (3, 3, 8, 8) and batch["images"].dtype == torch.uint8
    assert batch["boxes"].shape == (3, 3, 4) and batch["boxes"].dtype == torch.float32
    assert batch["labels"].tolist() == [[0, 1, -1], [-1, -1, -1], [0, 1, 2]]
    assert (batch["boxes"][0, 2] == 0).all() and (batch["boxes"][1] == 0).all()
    assert batch["boxes"][2, 2].tolist() == [9, 10, 11, 12]
    assert batch["crowd_boxes"].shape == (3, 1, 4) and batch["crowd_mask"].tolist() == [[False], [False], [True]]
    assert batch["image_ids"].tolist() == [1, 2, 3] and batch["image_ids"].dtype == torch.int64
    assert batch["scales"].dtype == torch.float32 and batch["scales"].tolist() == [0.5, 1.0, 1.5]
    assert batch["orig_sizes"].tolist() == [[10, 20], [20, 20], [30, 20]]

    empty = collate_detection([sample(0, 0, 1)])
    assert empty["boxes"].shape == (1, 1, 4) and empty["labels"].tolist() == [[-1]]
    assert empty["crowd_boxes"].shape == (1, 1, 4) and not empty["crowd_mask"].any()
    with pytest.raises(ValueError, match="same shape"):
        odd = sample(1, 0, 2)
        odd["image"] = torch.zeros((3, 4, 4), dtype=torch.uint8)
        collate_detection([sample(1, 0, 1), odd])


# ----------------------------------------------------------------------------- demo data


def _digest(folder: Path) -> str:
    hasher = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            hasher.update(path.relative_to(folder).as_posix().encode())
            hasher.update(path.read_bytes())
    return hasher.hexdigest()


def test_demo_dataset_is_deterministic_and_loads(tmp_path):
    first = make_demo_dataset(tmp_path / "a", num_train=6, num_val=3, seed=3)
    second = make_demo_dataset(tmp_path / "b", num_train=6, num_val=3, seed=3)
    other = make_demo_dataset(tmp_path / "c", num_train=6, num_val=3, seed=4)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    train_json = Path(first["train_annotations"]).read_bytes()
    assert hashlib.sha256(train_json).digest() == hashlib.sha256(Path(second["train_annotations"]).read_bytes()).digest()
    assert train_json != Path(other["train_annotations"]).read_bytes()
    assert not list((tmp_path / "a" / "annotations").glob("*.tmp"))

    dataset = CocoDetection(first["train_images"], first["train_annotations"], transform=train_transforms(96))
    assert dataset.category_ids == [1, 3, 7] and dataset.class_names == ["circle", "square", "triangle"]
    assert len(dataset) == 6 and dataset.report["invalid_boxes"] == 0 and dataset.report["clipped_boxes"] == 0
    raw = json.loads(train_json)
    for image in raw["images"]:
        assert 320 <= image["width"] <= 640 and 240 <= image["height"] <= 480
    for ann in raw["annotations"]:
        assert 10 <= max(ann["bbox"][2:]) <= 170
    val = CocoDetection(first["val_images"], first["val_annotations"])
    assert len(val) == 3 and val[0]["image"].shape == (val[0]["orig_size"] + (3,))


def test_demo_boxes_enclose_the_drawn_shapes(tmp_path):
    paths = make_demo_dataset(tmp_path, num_train=4, num_val=0 + 1, seed=0)
    dataset = CocoDetection(paths["train_images"], paths["train_annotations"])
    checked = 0
    for index in range(len(dataset)):
        sample = dataset[index]
        image = sample["image"].astype(np.int32)
        saturation = image.max(axis=2) - image.min(axis=2)
        for box in sample["boxes"].astype(int):
            x1, y1, x2, y2 = box
            inside = saturation[y1:y2, x1:x2]
            assert np.mean(inside > 100) > 0.3  # the vivid shape fills much of its box
            checked += 1
    assert checked > 0


def test_make_demo_data_tool_prints_paths(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_demo_data", Path(__file__).parents[2] / "tools" / "make_demo_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path / "d"), "--num-train", "2", "--num-val", "1"]) == 0
    output = capsys.readouterr().out
    assert "train_annotations:" in output and str(tmp_path / "d") in output
    assert len(json.loads((tmp_path / "d" / "annotations" / "instances_val.json").read_text())["images"]) == 1


# ----------------------------------------------------------------------------- multi-worker loading


def test_dataloader_with_two_workers_yields_all_good_samples(tmp_path):
    images = [_image(i, f"img{i}.jpg") for i in range(1, 9)]
    annotations = [_ann(i, i, 1, [4, 4, 20, 20]) for i in range(1, 9)]
    folder, json_path = _dataset_files(tmp_path, images, annotations)
    _truncate(folder / "img5.jpg")
    transform = train_transforms(64, scale_range=(0.8, 1.2))
    # Use OpenCV in the parent before forking: its thread pool must not deadlock the workers.
    warm_up = CocoDetection(folder, json_path, transform=transform)
    for index in (0, 1, 2):
        warm_up[index]
    dataset = CocoDetection(folder, json_path, transform=transform)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=collate_detection,
                        worker_init_fn=worker_init_fn, timeout=60)
    seen = []
    for batch in loader:
        assert batch["images"].shape == (2, 3, 64, 64) and batch["images"].dtype == torch.uint8
        seen.extend(batch["image_ids"].tolist())
    assert len(seen) == 8
    assert set(seen) == {1, 2, 3, 4, 6, 7, 8}
