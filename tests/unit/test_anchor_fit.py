"""The anchor fit (effdet.engine.anchor_fit): boxes out of the anchor range, the suggested anchor scale, the best IoU by
the nearest grid centre, the start-up check of a training run and the letterboxed boxes it judges."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from effdet.engine.anchor_fit import anchor_fit, anchor_size_range, letterboxed_boxes, suggest_anchors
from effdet.engine.schema import ConfigError, load_train_config, resolve_model_config
from tests.helpers.datasets import small_box_coco

DEMO = "configs/demo.yaml"


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


def test_startup_anchor_check_reports_and_applies_only_when_asked():
    from effdet.engine.anchor_fit import startup_check
    from effdet.modeling.variants import model_config

    model = model_config("efficientdet_lite0", image_size=256)  # anchor_scale 3: smallest anchor 24 px
    coco = small_box_coco()
    text, overrides = startup_check(coco, model, 0.5, "report")
    assert "best possible recall" in text and "warning: " in text and "data.anchor_fit=apply" in text
    assert overrides == {}
    text, overrides = startup_check(coco, model, 0.5, "apply")
    assert overrides["anchor_scale"] < 3.0 and len(overrides["aspect_ratios"]) == 3
    assert "training with the suggested anchors" in text
    assert startup_check(coco, model, 0.5, "off") == ("", {})
    fitting = small_box_coco(side=(40, 60))  # boxes the default anchors match: no warning, no search
    text, overrides = startup_check(fitting, model, 0.5, "apply")
    assert "warning" not in text and "suggested" not in text and overrides == {}


def test_train_startup_writes_applied_anchors_into_the_config():
    """runner.check_anchors (what tools/train.py runs before building the model): with data.anchor_fit=apply the
    suggestion lands in cfg.model, so config.yaml and the checkpoints' model config carry it."""
    from types import SimpleNamespace

    from effdet.engine.runner import check_anchors

    cfg = load_train_config(DEMO, ["data.anchor_fit=apply"])
    datamodule = SimpleNamespace(training_annotations=small_box_coco)  # the training boxes as a COCO dict
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
