"""Tiled training through tools/train.py (issue 24): large images in each data format (COCO, VOC, YOLO) train on
their tiles and validate whole images by sliced inference; a run stopped by SIGTERM mid-epoch resumes to the
uninterrupted run's weights; two DDP processes share the tiles of an epoch."""
from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.helpers.datasets import expected_tiles, write_large_image_dataset, write_voc, write_yolo
from tests.helpers.env import REPO
from tests.helpers.runs import max_difference, start_and_wait_for_checkpoint, step_of, train_env

TILE, OVERLAP, MIN_VISIBLE, EMPTY = 256, 0.2, 0.5, 0.5


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """2 training and 1 validation image of 960 x 480 px with 6 objects of 16-40 px each: tiles with and without
    boxes."""
    return write_large_image_dataset(tmp_path_factory.mktemp("tiled"), num_train=2, num_val=1, size=(480, 960),
                                     objects=6, seed=4)


def _tiles_per_epoch(root: Path) -> int:
    counts = expected_tiles(json.loads((root / "annotations" / "instances_train.json").read_text()), TILE, OVERLAP,
                            MIN_VISIBLE)
    empty = sum(c == 0 for c in counts)
    return sum(c > 0 for c in counts) + round(EMPTY * empty)


def _steps(samples: int, batch: int) -> int:
    """Batches of one epoch as the loader makes them: the last partial batch is dropped unless it is the only one."""
    return samples // batch if samples > batch else 1


def _command(out: Path, data: list[str], **extra) -> list[str]:
    values = {"output_dir": out, "model.image_size": 128, "model.pretrained_backbone": "null", "data.batch_size": 4,
              "data.num_workers": 0, "data.tile_size": TILE, "data.tile_overlap": OVERLAP,
              "data.tile_min_visible": MIN_VISIBLE, "data.tile_empty_fraction": EMPTY, "eval.max_detections": 300,
              "trainer.max_epochs": 1, "trainer.enable_progress_bar": "false", "trainer.enable_model_summary": "false",
              "trainer.accelerator": "cpu", "trainer.log_every_n_steps": 1}
    values.update(extra)
    return [sys.executable, str(REPO / "tools" / "train.py"), str(REPO / "configs" / "demo.yaml"), *data,
            *[f"{k}={v}" for k, v in values.items()]]


def _run(command: list[str], **env) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=3000, env=train_env(**env),
                            cwd=str(REPO))
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def _data_overrides(fmt: str, root: Path, tmp_path: Path) -> list[str]:
    coco = {split: json.loads((root / "annotations" / f"instances_{split}.json").read_text())
            for split in ("train", "val")}
    if fmt == "coco":
        return [f"data.root={root}", "data.train.images=train", "data.train.annotations=annotations/instances_train.json",
                "data.val.images=val", "data.val.annotations=annotations/instances_val.json"]
    if fmt == "voc":
        voc = tmp_path / "VOC"
        for split in ("train", "val"):
            write_voc(coco[split], root / split, voc, split)
        return ["data.format=voc", "data.root=null", f"data.train.images={voc / 'JPEGImages'}",
                f"data.train.annotations={voc / 'ImageSets/Main/train.txt'}", f"data.val.images={voc / 'JPEGImages'}",
                f"data.val.annotations={voc / 'ImageSets/Main/val.txt'}"]
    yolo = tmp_path / "yolo"
    for split in ("train", "val"):
        write_yolo(coco[split], root / split, yolo, split)
    return ["data.format=yolo", f"data.root={yolo}", "data.train.images=images/train",
            "data.train.annotations=labels/train", "data.val.images=images/val", "data.val.annotations=labels/val",
            "data.classes=data.yaml"]


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["coco", "voc", "yolo"])
def test_tiled_training_in_each_data_format(tmp_path, large, fmt):
    """`tools/train.py … data.tile_size=256`: the epoch is the tiles (every tile with a box and half of the empty
    ones), validation scores the whole 960 x 480 image by slices of the tile size, and the run writes its metrics."""
    out = tmp_path / "run"
    result = _run(_command(out, _data_overrides(fmt, large, tmp_path)))
    log = result.stdout + result.stderr
    windows = len(expected_tiles(json.loads((large / "annotations" / "instances_train.json").read_text()), TILE,
                                 OVERLAP, MIN_VISIBLE))
    assert windows == 2 * 3 * 5
    assert f"2 images -> {windows} tiles" in log, log[-3000:]
    per_epoch = _tiles_per_epoch(large)
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == _steps(per_epoch, 4)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["eval"]["slice_size"] == TILE and config["data"]["tile_size"] == TILE
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["max_dets"] == 300 and set(metrics["per_class"]) == {"box", "disc"}


@pytest.mark.slow
def test_tiled_training_resumes_exactly_after_sigterm(tmp_path, large):
    """SIGTERM mid-epoch, then the same command (with a loader worker, which must not matter): the run continues at
    the right tile and ends with the uninterrupted run's weights."""
    data = _data_overrides("coco", large, tmp_path)
    settings = {"data.batch_size": 2, "trainer.max_epochs": 2, "trainer.deterministic": "true",
                "checkpoint.every_n_steps": 2, "seed": 3, "eval.every_n_epochs": 100}
    reference = tmp_path / "reference"
    _run(_command(reference, data, **settings))
    total = step_of(reference / "checkpoints" / "last.ckpt")
    per_epoch = _steps(_tiles_per_epoch(large), 2)
    counts = expected_tiles(json.loads((large / "annotations" / "instances_train.json").read_text()), TILE, OVERLAP,
                            MIN_VISIBLE)
    assert total == 2 * per_epoch and per_epoch >= 4 and counts.count(0) >= 6  # empty tiles are drawn each epoch

    out = tmp_path / "run"
    command = _command(out, data, **{**settings, "data.num_workers": 1})
    process = start_and_wait_for_checkpoint(command, out, min_step=2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=1800)
    assert process.returncode == 143, stderr[-3000:]
    step = step_of(out / "checkpoints" / "last.ckpt")
    assert 2 <= step < total and step % per_epoch != 0, step  # stopped inside an epoch
    resumed = _run(command)
    assert f"global step {step}" in resumed.stdout + resumed.stderr
    final = [torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"] for run in (reference, out)]
    difference = max_difference(*final)
    print(f"SIGTERM at step {step} of {total}; max |resumed - uninterrupted| = {difference:.3g}")
    assert difference <= 1e-6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tiled_training_under_two_process_ddp(tmp_path, large):
    """`trainer.strategy=ddp trainer.devices=2` with tiles: each rank takes half of the epoch's tiles (so half the
    steps of one process), the fit validates whole images by slices and writes the run directory."""
    out = tmp_path / "run"
    _run(_command(out, _data_overrides("coco", large, tmp_path), **{
        "data.batch_size": 2, "trainer.devices": 2, "trainer.strategy": "ddp"}), MASTER_PORT=str(_free_port()))
    per_rank = -(-_tiles_per_epoch(large) // 2)
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == _steps(per_rank, 2)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"AP", "AP50", "per_class"} <= set(metrics)
