"""Tiled training's data (effdet/data/tiles.py): the tiles of an image, the boxes each keeps, the tiles of an epoch,
and how they go through the resumable sampler, the config and the start-up anchor check."""
from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from effdet.data import CocoDetection
from effdet.data.resumable import EpochSampler, SeededSamples
from effdet.data.tiles import TileSettings, TiledDetection, boxes_in_window, tile_coco, tile_windows
from tests.helpers.datasets import expected_tiles, window_starts, write_large_image_dataset


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    return write_large_image_dataset(tmp_path_factory.mktemp("large"), num_train=3, num_val=1, objects=14, seed=2)


def _images(root, split="train"):
    return CocoDetection(root / split, root / "annotations" / f"instances_{split}.json")


def test_tile_windows_cover_the_image_on_the_slicing_grid():
    settings = TileSettings(256, overlap=0.2)
    windows = tile_windows(480, 640, settings)
    xs, ys = window_starts(640, 256, 0.2), window_starts(480, 256, 0.2)
    assert xs == [0, 204, 384] and ys == [0, 204, 224]
    assert windows.tolist() == [[x, y, x + 256, y + 256] for y in ys for x in xs]
    covered = np.zeros((480, 640), bool)
    for x1, y1, x2, y2 in windows:
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    assert tile_windows(200, 250, settings).tolist() == [[0, 0, 250, 200]]  # a smaller image stays whole
    assert tile_windows(200, 600, settings).tolist() == [[x, 0, x + 256, 200] for x in window_starts(600, 256, 0.2)]


def test_a_cut_box_is_kept_clipped_when_its_visible_share_reaches_min_visible():
    window = (100, 100, 200, 200)
    boxes = np.array([[80, 120, 120, 160],    # 20 of 40 px wide inside: 0.5 of its area
                      [79, 120, 119, 160],    # 19 of 40: 0.475
                      [150, 150, 170, 170],   # inside
                      [300, 300, 320, 320],   # outside
                      [199.5, 120, 230, 160]],  # 0.5 px inside: below the 1 px minimum side
                     np.float32)
    clipped, keep = boxes_in_window(boxes, window, 0.5)
    assert keep.tolist() == [True, False, True, False, False]
    assert clipped.tolist() == [[0, 20, 20, 60], [50, 50, 70, 70]]  # window pixels
    _, keep_any = boxes_in_window(boxes, window, 0.0)
    assert keep_any.tolist() == [True, True, True, False, False]


def test_tiles_are_the_image_regions_with_their_boxes(large):
    images = _images(large)
    settings = TileSettings(256, overlap=0.2, min_visible=0.5, empty_fraction=1.0)
    tiles = TiledDetection(images, settings, transform=None)
    per_image = len(window_starts(640, 256, 0.2)) * len(window_starts(480, 256, 0.2))
    assert len(tiles.windows) == 3 * per_image
    coco = json.loads((large / "annotations" / "instances_train.json").read_text())
    for tile_id in range(len(tiles.windows)):
        sample = tiles.tile(tile_id)
        image_index = int(tiles.tile_image[tile_id])
        x1, y1, x2, y2 = (int(v) for v in tiles.windows[tile_id])
        whole = images[image_index]["image"]
        assert np.array_equal(sample["image"], whole[y1:y2, x1:x2])
        assert sample["orig_size"] == (y2 - y1, x2 - x1) and sample["image_id"] == images.image_ids[image_index]
        expected = []  # the rule written out: clip, keep when >= half of the area is inside
        for ann in coco["annotations"]:
            if ann["image_id"] != sample["image_id"]:
                continue
            bx, by, bw, bh = ann["bbox"]
            cx1, cy1 = max(bx, x1), max(by, y1)
            cx2, cy2 = min(bx + bw, x2), min(by + bh, y2)
            if cx2 - cx1 >= 1 and cy2 - cy1 >= 1 and (cx2 - cx1) * (cy2 - cy1) >= 0.5 * bw * bh:
                expected.append([cx1 - x1, cy1 - y1, cx2 - x1, cy2 - y1])
        assert sorted(sample["boxes"].tolist()) == sorted(expected)
        assert len(sample["labels"]) == len(expected) == tiles.object_counts[tile_id]


def test_each_epoch_keeps_every_tile_with_boxes_and_its_share_of_empty_ones(large):
    images = _images(large)
    tiles = TiledDetection(images, TileSettings(128, overlap=0.0, empty_fraction=0.25), transform=None, seed=3)
    with_boxes = set(np.flatnonzero(tiles.object_counts > 0).tolist())
    empty = set(np.flatnonzero(tiles.object_counts == 0).tolist())
    assert len(empty) >= 8, "the test needs empty tiles"
    keep = round(0.25 * len(empty))
    assert len(tiles) == len(with_boxes) + keep
    draws = []
    for epoch in range(4):
        epoch_tiles = tiles.epoch_tiles(epoch)
        assert len(epoch_tiles) == len(tiles) == len(set(epoch_tiles.tolist()))
        assert with_boxes <= set(epoch_tiles.tolist())
        assert len(set(epoch_tiles.tolist()) & empty) == keep
        assert np.array_equal(epoch_tiles, tiles.epoch_tiles(epoch))  # a function of (seed, epoch)
        draws.append(tuple(sorted(set(epoch_tiles.tolist()) & empty)))
    assert len(set(draws)) > 1  # other epochs, other empty tiles
    other_seed = TiledDetection(images, TileSettings(128, overlap=0.0, empty_fraction=0.25), transform=None, seed=4)
    assert any(not np.array_equal(other_seed.epoch_tiles(e), tiles.epoch_tiles(e)) for e in range(4))


def test_tiles_resume_mid_epoch_and_shard_across_ranks(large):
    images = _images(large)
    tiles = TiledDetection(images, TileSettings(200, overlap=0.1, empty_fraction=0.5), transform=None, seed=1)
    samples = SeededSamples(tiles, seed=1)
    whole = EpochSampler(tiles, batch_size=2, seed=1)
    whole.set_epoch(2)
    keys = list(whole)
    resumed = EpochSampler(tiles, batch_size=2, seed=1)
    resumed.resume_at(2, 3)
    assert list(resumed) == keys[6:]
    for key in keys[6:8]:  # the same tile and pixels, whichever process or resumed run asks
        first, again = samples[key], samples[key]
        assert np.array_equal(first["image"], again["image"])
        assert np.array_equal(first["image"], tiles.tile(int(tiles.epoch_tiles(2)[key[1]]))["image"])
    ranks = [EpochSampler(tiles, batch_size=2, num_replicas=2, rank=r, seed=1) for r in (0, 1)]
    for sampler in ranks:
        sampler.set_epoch(2)
    shares = [[index for _, index in sampler] for sampler in ranks]
    assert len(shares[0]) == len(shares[1]) == -(-len(tiles) // 2)
    assert set(shares[0]) | set(shares[1]) == set(range(len(tiles)))


def test_tile_coco_measures_the_boxes_as_tiles_present_them(large):
    coco = json.loads((large / "annotations" / "instances_train.json").read_text())
    settings = TileSettings(256, overlap=0.2, min_visible=0.5)
    tiled = tile_coco(coco, settings)
    tiles = TiledDetection(_images(large), settings, transform=None)
    assert len(tiled["images"]) == len(tiles.windows)
    assert [(i["width"], i["height"]) for i in tiled["images"]] == [
        (int(w[2] - w[0]), int(w[3] - w[1])) for w in tiles.windows]
    counts = np.bincount([a["image_id"] - 1 for a in tiled["annotations"]], minlength=len(tiled["images"]))
    assert counts.tolist() == tiles.object_counts.tolist() == expected_tiles(coco, 256, 0.2, 0.5)
    assert all(0 <= a["bbox"][0] and a["bbox"][0] + a["bbox"][2] <= 256 for a in tiled["annotations"])


def _config(root, *extra):
    from effdet.engine.schema import load_train_config

    return load_train_config("configs/demo.yaml", [f"data.root={root}", *extra])


def test_config_tile_keys_are_validated_and_validation_slices_at_the_tile_size(large):
    from effdet.engine.schema import ConfigError

    cfg = _config(large)
    assert cfg.data.tile_size is None and cfg.eval.slice_size is None  # off by default: today's behaviour
    cfg = _config(large, "data.tile_size=256")
    assert cfg.eval.slice_size == 256
    assert _config(large, "data.tile_size=256", "eval.slice_size=300").eval.slice_size == 300
    for bad, key in (("data.tile_size=0", "data.tile_size"), ("data.tile_overlap=1.0", "data.tile_overlap"),
                     ("data.tile_min_visible=0", "data.tile_min_visible"),
                     ("data.tile_empty_fraction=1.5", "data.tile_empty_fraction")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            _config(large, "data.tile_size=256", bad)


def test_the_anchor_check_and_the_data_module_see_tiles(large):
    from effdet.engine.datamodule import DetectionDataModule

    cfg = _config(large, "data.tile_size=256", "data.num_workers=0")
    module = DetectionDataModule(cfg.data, [256, 256], [0.5, 0.5, 0.5], seed=0, source_val=True)
    assert isinstance(module.train_set, TiledDetection)
    boxes = module.training_annotations()
    assert {(i["width"], i["height"]) for i in boxes["images"]} == {(256, 256)}
    assert len(boxes["images"]) == 3 * 9
    whole = _config(large, "data.num_workers=0")
    plain = DetectionDataModule(whole.data, [256, 256], [0.5, 0.5, 0.5], seed=0)
    assert {(i["width"], i["height"]) for i in plain.training_annotations()["images"]} == {(640, 480)}
    batch = next(iter(module.train_dataloader()))
    assert tuple(batch["images"].shape[-2:]) == (256, 256)


def test_tile_settings_from_config_is_none_when_off():
    data = OmegaConf.create({"tile_size": None, "tile_overlap": 0.2, "tile_min_visible": 0.5,
                             "tile_empty_fraction": 0.1})
    assert TileSettings.from_config(data) is None
    data.tile_size = 512
    assert TileSettings.from_config(data) == TileSettings(512, 0.2, 0.5, 0.1)


def test_a_tile_of_an_image_smaller_than_its_annotation_says_stays_inside_it(large, tmp_path):
    """The JSON says 640 x 480 but the file is 300 x 200 (a replaced file): tiles that start beyond it fall back to its
    first tile, the others are clipped to it; none is a sliver or out of bounds."""
    import shutil

    import cv2

    root = tmp_path / "replaced"
    shutil.copytree(large, root)
    name = json.loads((root / "annotations" / "instances_train.json").read_text())["images"][0]["file_name"]
    cv2.imwrite(str(root / "train" / name), np.full((200, 300, 3), 90, np.uint8))
    tiles = TiledDetection(_images(root), TileSettings(256, overlap=0.2, empty_fraction=1.0), transform=None)
    for tile_id in np.flatnonzero(tiles.tile_image == 0):
        sample = tiles.tile(int(tile_id))
        height, width = sample["image"].shape[:2]
        assert 64 <= height <= 200 and 64 <= width <= 256 and sample["orig_size"] == (height, width)
