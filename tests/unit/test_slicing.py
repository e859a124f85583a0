"""Sliced inference (issue 23): the window grid, the per-class NMS / NMM merge, slicing an image through a detect
function, and the Predictor door (a stub network that only sees objects of at least 8 network pixels, and a
checkpoint whose stored eval section carries the keys). Expected values are worked out by hand in the comments."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

from effdet import Predictor
from effdet.modeling.postprocess_settings import PostprocessSettings, make_postprocess_settings
from effdet.ops.slicing import detect_images, detect_sliced, is_sliced, slice_grid, slice_starts
from effdet.modeling.anchors import anchors_for
from effdet.modeling.variants import model_config
from effdet.ops.box_coder import BoxCoder
from effdet.ops.merge import merge_boxes, overlap

# ------------------------------------------------------------------------------------------ the grid


def test_slice_grid_by_hand():
    # stride = int(512 * 0.8) = 409; rows of a 1000 px side: 0, 409, then flush 1000 - 512 = 488;
    # columns of 1500 px: 0, 409, 818, then flush 988
    grid = slice_grid(1000, 1500, 512, 0.2)
    expected = [(x, y, x + 512, y + 512) for y in (0, 409, 488) for x in (0, 409, 818, 988)]
    assert grid.tolist() == [list(w) for w in expected]
    covered = np.zeros((1000, 1500), bool)
    for x1, y1, x2, y2 in grid.tolist():
        assert 0 <= x1 < x2 <= 1500 and 0 <= y1 < y2 <= 1000
        covered[y1:y2, x1:x2] = True
    assert covered.all()


def test_slice_starts_edge_cases():
    assert slice_starts(1000, 200, 0.0) == [0, 200, 400, 600, 800]  # exact fit: no duplicate last window
    assert slice_starts(513, 512, 0.2) == [0, 1]
    assert slice_starts(300, 512, 0.2) == [0]
    # a side shorter than the slice: windows as long as that side
    assert slice_grid(300, 1100, 512, 0.5).tolist() == [[0, 0, 512, 300], [256, 0, 768, 300], [512, 0, 1024, 300],
                                                        [588, 0, 1100, 300]]
    with pytest.raises(ValueError):
        slice_starts(100, 10, 1.0)


def test_is_sliced_only_when_a_side_is_longer_than_the_slice():
    settings = PostprocessSettings(slice_size=512)
    assert not is_sliced(512, 512, settings)
    assert is_sliced(512, 513, settings)
    assert not is_sliced(5000, 5000, PostprocessSettings())


# ------------------------------------------------------------------------------------------ the merge


def test_overlap_iou_and_ios_by_hand():
    box = np.asarray([0, 0, 12, 20])
    other = np.asarray([[8, 0, 20, 20], [2, 2, 6, 6], [30, 30, 40, 40]])
    # [8,0,20,20]: intersection 4 x 20 = 80, areas 240 and 240: IoU 80 / 400 = 0.2, IoS 80 / 240
    # [2,2,6,6] lies inside: IoU 16 / 240, IoS 1; the far box: 0
    np.testing.assert_allclose(overlap(box, other, "iou"), [0.2, 16 / 240, 0.0])
    np.testing.assert_allclose(overlap(box, other, "ios"), [80 / 240, 1.0, 0.0])


def test_merge_nms_is_greedy_and_class_aware():
    boxes = [[0, 0, 10, 10], [1, 0, 11, 10], [1, 0, 11, 10], [20, 20, 30, 30]]
    scores = [0.9, 0.8, 0.7, 0.6]
    labels = [0, 0, 1, 0]
    # box 1 overlaps box 0 (same class) with IoU 90 / 110 = 0.82 > 0.5: suppressed; box 2 is another class
    merged = merge_boxes(boxes, scores, labels, "nms", "iou", 0.5)
    np.testing.assert_allclose(merged["boxes"], [[0, 0, 10, 10], [1, 0, 11, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(merged["scores"], [0.9, 0.7, 0.6])
    assert merged["labels"].tolist() == [0, 1, 0]
    assert merge_boxes(boxes, scores, labels, "nms", "iou", 0.9)["scores"].size == 4  # 0.82 is not above 0.9
    assert merge_boxes(boxes, scores, labels, "nms", "iou", 0.5, max_detections=2)["scores"].tolist() == \
        pytest.approx([0.9, 0.7])


def test_merge_nmm_makes_the_enclosing_box_with_the_best_score():
    # two halves of one object cut by a slice edge: IoU 0.2, IoS 1/3
    boxes = [[0, 0, 12, 20], [8, 0, 20, 20], [100, 100, 110, 110]]
    scores, labels = [0.9, 0.8, 0.5], [3, 3, 3]
    merged = merge_boxes(boxes, scores, labels, "nmm", "ios", 0.3)
    np.testing.assert_allclose(merged["boxes"], [[0, 0, 20, 20], [100, 100, 110, 110]])
    np.testing.assert_allclose(merged["scores"], [0.9, 0.5])
    # the same with NMS keeps the better half only; with IoU (0.2 < 0.3) nothing merges
    np.testing.assert_allclose(merge_boxes(boxes, scores, labels, "nms", "ios", 0.3)["boxes"],
                               [[0, 0, 12, 20], [100, 100, 110, 110]])
    assert len(merge_boxes(boxes, scores, labels, "nmm", "iou", 0.3)["boxes"]) == 3
    # another class is never absorbed
    assert len(merge_boxes(boxes, scores, [3, 4, 3], "nmm", "ios", 0.3)["boxes"]) == 3
    empty = merge_boxes(np.zeros((0, 4)), [], [], "nmm", "ios", 0.3)
    assert empty["boxes"].shape == (0, 4) and empty["labels"].dtype == np.int64


# ------------------------------------------------------------------------------------------ slicing an image


def white_squares(height: int, width: int, boxes) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    for x1, y1, x2, y2 in boxes:
        image[y1:y2, x1:x2] = 255
    return image


class ComponentDetect:
    """A numpy ``detect`` function: one detection (label 1) per white blob of each image, in that image's pixels;
    score 0.9 for a blob clear of the image border, 0.6 for one touching it (cut by a slice edge). Records the
    shapes of the images of each call."""

    def __init__(self):
        self.calls: list[list[tuple[int, ...]]] = []

    def __call__(self, images):
        self.calls.append([image.shape for image in images])
        results = []
        for image in images:
            count, _, stats, _ = cv2.connectedComponentsWithStats((image[..., 0] > 127).astype(np.uint8))
            boxes, scores = [], []
            for x, y, w, h, _ in stats[1:count]:
                boxes.append([x, y, x + w, y + h])
                touches = x == 0 or y == 0 or x + w == image.shape[1] or y + h == image.shape[0]
                scores.append(0.6 if touches else 0.9)
            results.append({"boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
                            "scores": np.asarray(scores, np.float32), "labels": np.ones(len(boxes), np.int64)})
        return results


OBJECTS = [(40, 20, 60, 44), (120, 70, 140, 90)]  # xyxy in a 100 x 150 image


def test_detect_sliced_shifts_batches_and_merges_by_hand():
    # slice 64, overlap 0.25: stride 48; rows 0, 36 (flush); columns 0, 48, 86 (flush): 6 windows, batches of 4 + 2.
    # Object 1 (x 40..60, y 20..44) is whole in window (0, 0) and cut in (48, 0), (0, 36), (48, 36): pieces
    # (48,20,60,44), (40,36,60,44), (48,36,60,44) in source pixels, all inside the whole one (IoS 1). Object 2 is
    # whole in window (86, 36) only.
    image = white_squares(100, 150, OBJECTS)
    detect = ComponentDetect()
    settings = make_postprocess_settings(None, {"slice_size": 64, "slice_overlap": 0.25, "slice_batch_size": 4,
                                                "merge": "nmm", "merge_metric": "ios", "merge_threshold": 0.5})
    found = detect_sliced(image, detect, settings)
    assert [len(call) for call in detect.calls] == [4, 2]
    assert all(shape == (64, 64, 3) for call in detect.calls for shape in call)
    np.testing.assert_allclose(found["boxes"], np.asarray(OBJECTS, np.float32))
    np.testing.assert_allclose(found["scores"], [0.9, 0.9])
    # with plain NMS at IoU 0.5, against the whole box (area 480): (48,20,60,44) has IoU 288 / 480 = 0.6
    # (suppressed), (40,36,60,44) 160 / 480 = 0.33 and (48,36,60,44) 96 / 480 = 0.2 stay; then the first of these
    # (window (0, 36) comes before (48, 36), equal scores) suppresses the other: IoU 96 / 160 = 0.6
    nms = detect_sliced(image, ComponentDetect(), make_postprocess_settings(settings, {"merge": "nms",
                                                                                     "merge_metric": "iou"}))
    assert sorted(map(tuple, nms["boxes"].tolist())) == sorted(
        [(40, 20, 60, 44), (120, 70, 140, 90), (40, 36, 60, 44)])
    # max_detections keeps the best after merging
    assert len(detect_sliced(image, ComponentDetect(), make_postprocess_settings(settings, {"max_detections": 1}))
               ["boxes"]) == 1


def test_slice_full_image_adds_the_whole_image_pass():
    image = white_squares(100, 150, OBJECTS)
    detect = ComponentDetect()
    settings = make_postprocess_settings(None, {"slice_size": 64, "slice_overlap": 0.25, "slice_full_image": True,
                                                "merge": "nmm", "merge_metric": "ios"})
    found = detect_sliced(image, detect, settings)
    assert detect.calls[-1] == [(100, 150, 3)]
    np.testing.assert_allclose(found["boxes"], np.asarray(OBJECTS, np.float32))


def test_detect_images_slices_only_the_large_images():
    settings = make_postprocess_settings(None, {"slice_size": 64, "merge": "nmm", "merge_metric": "ios"})
    small = white_squares(60, 64, [(10, 10, 20, 20)])
    large = white_squares(100, 150, OBJECTS)
    detect = ComponentDetect()
    found = detect_images([small, large, small], detect, settings)
    assert detect.calls[0] == [(60, 64, 3), (60, 64, 3)]  # the small ones together, whole, first
    assert all(shape == (64, 64, 3) for call in detect.calls[1:] for shape in call)
    np.testing.assert_allclose(found[0]["boxes"], [[10, 10, 20, 20]])
    np.testing.assert_allclose(found[1]["boxes"], np.asarray(OBJECTS, np.float32))


# ------------------------------------------------------------------------------------------ the Predictor door

TRUE_CLASS = 1
MIN_SIDE = 8  # network pixels: smaller blobs are not seen


class BlobNetwork(nn.Module):
    """A stand-in EfficientDet: one confident detection of ``TRUE_CLASS`` per bright blob of the network input whose
    sides are at least ``MIN_SIDE`` network pixels (blob k on P3 anchor k of row 0); nothing else. Like a real
    detector it cannot see objects that the letterbox shrinks too much. Records its batch sizes."""

    def __init__(self, image_size: int = 256):
        super().__init__()
        self.config = model_config("efficientdet_d0", num_classes=2, image_size=image_size)
        self.weight = nn.Parameter(torch.zeros(()))
        self.coder = BoxCoder()
        self.batches: list[int] = []

    def forward(self, inputs: torch.Tensor):
        config = self.config
        batch, _, height, width = inputs.shape
        self.batches.append(batch)
        anchors = anchors_for(config, (height, width), inputs.device)
        num_anchors, num_classes = config.num_anchors, config.num_classes
        class_outputs, box_outputs = [], []
        for level in range(config.min_level, config.max_level + 1):
            size = (-(-height // 2 ** level), -(-width // 2 ** level))
            class_outputs.append(torch.full((batch, num_anchors * num_classes, *size), -20.0))
            box_outputs.append(torch.zeros((batch, num_anchors * 4, *size)))
        for image in range(batch):
            bright = (inputs[image, 0] > 0.5).numpy().astype(np.uint8)
            count, _, stats, _ = cv2.connectedComponentsWithStats(bright)
            k = 0
            for x, y, w, h, _ in stats[1:count]:
                if min(w, h) < MIN_SIDE:
                    continue
                box = torch.tensor([x, y, x + w, y + h], dtype=torch.float32)
                class_outputs[0][image, TRUE_CLASS, 0, k] = 20.0  # anchor 0 of cell (0, k): flat anchor k * A
                box_outputs[0][image, 0:4, 0, k] = self.coder.encode(box[None], anchors[k * num_anchors][None])[0]
                k += 1
        return class_outputs, box_outputs


def scattered_objects(height: int, width: int, side: int = 24, step: int = 300) -> list[tuple[int, int, int, int]]:
    return [(x, y, x + side, y + side) for y in range(50, height - side, step) for x in range(70, width - side, step)]


def test_predictor_slicing_finds_small_objects_the_whole_image_cannot():
    # 1024 x 1536 image, 24 px objects; network input 256: the whole image is shrunk 6x (objects 4 px < 8: unseen),
    # a 256 px slice is not shrunk (24 px: seen). Slices overlap by 64 px > 24, so every object lies whole in some
    # slice; the pieces cut by slice edges are merged into it (nmm, ios).
    objects = scattered_objects(1024, 1536)
    assert len(objects) == 20
    image = white_squares(1024, 1536, objects)
    network = BlobNetwork()
    whole = Predictor(network, ["a", "b"], settings=make_postprocess_settings(None, {"nms": "hard"}))
    assert len(whole.predict(image, bgr=False)[0]["boxes"]) == 0
    settings = make_postprocess_settings(None, {"nms": "hard", "slice_size": 256, "slice_overlap": 0.25,
                                                "slice_batch_size": 16, "merge": "nmm", "merge_metric": "ios"})
    sliced = Predictor(network, ["a", "b"], settings=settings)
    result = sliced.predict(image, bgr=False)[0]
    # grid: stride 192; rows 0..576 + 768 (5), columns 0..1152 + 1280 (8): 40 slices in forwards of 16, 16, 8
    assert sliced.model.batches == [16, 16, 8]
    assert len(result["boxes"]) == len(objects)
    order = np.lexsort((result["boxes"][:, 0], result["boxes"][:, 1]))
    np.testing.assert_allclose(result["boxes"][order], np.asarray(objects, np.float32), atol=1.0)
    assert result["names"] == ["b"] * len(objects)


def test_predictor_from_checkpoint_uses_the_stored_slicing_keys(tmp_path):
    from tests.unit.test_predictor import colourful_image, write_lightning_checkpoint

    path = tmp_path / "best.ckpt"
    write_lightning_checkpoint(path, eval_section={
        "score_threshold": 0.001, "nms": "hard", "max_detections": 100, "slice_size": 48, "slice_overlap": 0.5,
        "slice_batch_size": 3, "merge": "nmm", "merge_metric": "ios", "merge_threshold": 0.6, "every_n_epochs": 1})
    predictor = Predictor.from_checkpoint(path, device="cpu", fuse_bn=False)
    assert (predictor.settings.slice_size, predictor.settings.slice_overlap, predictor.settings.merge,
            predictor.settings.merge_metric, predictor.settings.merge_threshold,
            predictor.settings.slice_batch_size) == (48, 0.5, "nmm", "ios", 0.6, 3)
    seen: list[list[tuple[int, ...]]] = []
    detect_rgb = predictor.detect_rgb
    predictor.detect_rgb = lambda images: seen.append([i.shape for i in images]) or detect_rgb(images)
    image = colourful_image(60, 100)
    result = predictor.predict(image)[0]
    # rows 0, 12 (flush 60 - 48); columns 0, 24, 48, 52 (flush): 8 slices of 48 x 48, in batches of 3
    assert [len(call) for call in seen] == [3, 3, 2]
    assert all(shape == (48, 48, 3) for call in seen for shape in call)
    assert 0 < len(result["boxes"]) <= 100
    boxes = result["boxes"]
    assert (boxes >= 0).all() and (boxes[:, 2] <= 100).all() and (boxes[:, 3] <= 60).all()
    # the override turns slicing off: one whole image
    seen.clear()
    predictor = Predictor.from_checkpoint(path, device="cpu", fuse_bn=False, slice_size=None)
    detect_rgb = predictor.detect_rgb
    predictor.detect_rgb = lambda images: seen.append([i.shape for i in images]) or detect_rgb(images)
    predictor.predict(image)
    assert seen == [[(60, 100, 3)]]


# ------------------------------------------------------------------------------------------ training's validation


def test_training_validation_slices_with_eval_slice_size(tmp_path):
    """eval.slice_size in the training config: the data module gives validation the images as read, and the
    validation step detects them as the Predictor does with the same weights and settings (slice by slice); a
    letterboxed batch with eval.slice_size set is refused, not silently scored whole."""
    from effdet.data import make_demo_dataset
    from effdet.engine.module import DetectionModule
    from effdet.engine.runner import prepare_data
    from effdet.engine.schema import ConfigError, load_train_config
    from tests.unit.test_training import ROOT, tiny_overrides

    root = tmp_path / "data"
    make_demo_dataset(root, num_train=2, num_val=2, seed=3)
    cfg = load_train_config(str(ROOT / "configs" / "demo.yaml"), tiny_overrides(root, tmp_path / "run", **{
        "model.pretrained_backbone": "null", "data.anchor_fit": "off", "model.image_size": 64,
        "eval.slice_size": 96, "eval.merge": "nmm", "eval.max_detections": 300, "optim.ema_decay": "null"}))
    datamodule = prepare_data(cfg)
    module = DetectionModule(cfg, datamodule.class_names, datamodule.category_ids).eval()
    batch = next(iter(datamodule.val_dataloader()))
    assert isinstance(batch["images"], list) and all(image.ndim == 3 for image in batch["images"])
    assert any(max(image.shape[:2]) > 96 for image in batch["images"])  # the demo images are larger: sliced

    class Recorder:
        def update(self, image_ids, detections):
            self.ids, self.detections = image_ids, detections

    module.evaluator = Recorder()
    module.validation_step(batch, 0)
    assert module.evaluator.ids == batch["image_ids"].tolist()
    predictor = Predictor(module.model, datamodule.class_names, datamodule.category_ids,
                          settings=module.postprocess_settings, device="cpu", fuse_bn=False)
    expected = predictor.predict_rgb(batch["images"])
    for ours, theirs in zip(module.evaluator.detections, expected):
        assert len(ours["scores"]) == len(theirs["scores"]) > 0
        np.testing.assert_allclose(ours["boxes"], theirs["boxes"], atol=1e-2)
        np.testing.assert_allclose(ours["scores"], theirs["scores"], atol=1e-4)
    letterboxed = {"images": torch.zeros(1, 3, 64, 64, dtype=torch.uint8), "scales": torch.ones(1),
                   "orig_sizes": torch.tensor([[64, 64]]), "image_ids": torch.tensor([1])}
    with pytest.raises(ConfigError, match="eval.slice_size=96 needs the validation images as read"):
        module.validation_step(letterboxed, 0)


# ------------------------------------------------------------------------------------------ drawing on large images


def test_drawings_grow_with_the_image_so_large_images_stay_readable():
    from effdet.data.visualize import draw_boxes, drawing_sizes

    assert drawing_sizes(480, 640) == (2, pytest.approx(640 / 1200), 1)
    assert drawing_sizes(100, 120) == (1, 0.35, 1)
    line, font_scale, stroke = drawing_sizes(4000, 6000)
    assert (line, font_scale, stroke) == (20, 5.0, 6)

    def caption_ink_rows(height: int, width: int) -> tuple[int, int]:
        """(rows of the caption above the box, width of the box's left edge) drawn on a grey image."""
        image = np.full((height, width, 3), 128, np.uint8)
        x1, y1 = width // 2, height // 2
        drawn = draw_boxes(image, [[x1, y1, x1 + width // 10, y1 + height // 10]], names=["car"], scores=[0.9],
                           color=(255, 255, 255))
        changed_above = np.flatnonzero((drawn[:y1 - 1, x1 + 2] != 128).any(axis=1))
        outline = np.flatnonzero((drawn[y1 + height // 20, x1 - 30:x1 + 30] != 128).any(axis=1))  # left edge
        return len(changed_above), len(outline)

    small_caption, small_line = caption_ink_rows(480, 640)
    large_caption, large_line = caption_ink_rows(4000, 6000)
    # the caption and the outline keep about their share of the image: several times larger on a ~10x larger image
    # (the outline: 2 px vs 20 px, anti-aliased edges counted)
    assert large_caption >= 6 * small_caption and large_line >= 4 * small_line


# ------------------------------------------------------------------------------------------ the config keys


def test_the_slicing_keys_are_eval_config_keys_with_their_rules():
    from effdet.engine.schema import ConfigError, load_train_config
    from tests.unit.test_training import DATA_KEYS

    cfg = load_train_config(None, DATA_KEYS + ["eval.slice_size=640", "eval.merge=nmm", "eval.merge_metric=ios",
                                               "eval.slice_full_image=true", "eval.max_detections=3000"])
    settings = PostprocessSettings.from_mapping(cfg.eval)
    assert (settings.slice_size, settings.merge, settings.merge_metric, settings.slice_full_image,
            settings.max_detections, settings.slice_overlap, settings.slice_batch_size) == (
        640, "nmm", "ios", True, 3000, 0.2, 8)
    assert load_train_config(None, DATA_KEYS).eval.slice_size is None  # off by default
    for key, value, message in (("merge", "wbf", "nms"), ("merge_metric", "giou", "ios"),
                                ("slice_overlap", "1.0", "in \\[0, 1\\)"), ("slice_size", "0", ">= 1"),
                                ("slice_batch_size", "0", ">= 1")):
        with pytest.raises(ConfigError, match=f"eval.{key}.*{message}"):
            load_train_config(None, DATA_KEYS + [f"eval.{key}={value}"])
    # the command lines' grammar: eval.slice_size=null turns a stored size off
    stored = make_postprocess_settings(None, {"slice_size": "640"})
    assert make_postprocess_settings(stored, {"slice_size": "null"}).slice_size is None


@pytest.mark.slow
def test_tools_train_validates_slice_by_slice(tmp_path):
    """tools/train.py ... eval.slice_size=96 eval.max_detections=300: the run trains, validates its (larger) images
    slice by slice and writes metrics.json scored with 300 detections per image."""
    import json

    from effdet.data import make_demo_dataset
    from tests.unit.test_training import ROOT, run_train, tiny_overrides

    root = tmp_path / "data"
    make_demo_dataset(root, num_train=4, num_val=2, seed=3)
    out = tmp_path / "run"
    done = run_train([str(ROOT / "configs" / "demo.yaml"), *tiny_overrides(root, out, **{
        "model.pretrained_backbone": "null", "data.anchor_fit": "off", "model.image_size": 64,
        "eval.slice_size": 96, "eval.max_detections": 300, "eval.plots": "false"})])
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["max_dets"] == 300 and "maxDets=300" in done.stdout
