"""Predictor: letterbox -> shared detect step -> boxes in original pixels; channel order; checkpoints; TTA."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn

from effdet import Predictor, create_model
from effdet.ops.box_coder import BoxCoder
from effdet.modeling.variants import model_config
from effdet.modeling.postprocess_settings import PostprocessSettings
from effdet.modeling.anchors import anchors_for
from effdet.inference.predictor import make_postprocess_settings, parse_overrides

from tests.helpers.checkpoints import write_training_checkpoint  # tests/helpers/checkpoints.py

NETWORK_SIZE = 512
TRUE_CLASS = 2


class BrightBoxLocalizer(nn.Module):
    """A stand-in detector whose output we control: it finds the bright (white) pixels in the network
    input and reports their bounding box, in network pixels, as one confident detection of class
    ``TRUE_CLASS`` on the first anchor; every other anchor is confidently background."""

    def __init__(self, image_size: int = NETWORK_SIZE, num_classes: int = 3):
        super().__init__()
        self.config = model_config("efficientdet_d0", num_classes=num_classes, image_size=image_size)
        self.anchor_weight = nn.Parameter(torch.zeros(()))  # gives the module a device
        self.coder = BoxCoder()

    def forward(self, inputs: torch.Tensor):
        config = self.config
        batch, _, height, width = inputs.shape
        anchors = anchors_for(config, (height, width), inputs.device)
        num_anchors, num_classes = config.num_anchors, config.num_classes
        class_outputs, box_outputs = [], []
        for level in range(config.min_level, config.max_level + 1):
            size = (-(-height // 2 ** level), -(-width // 2 ** level))
            class_outputs.append(torch.full((batch, num_anchors * num_classes, *size), -20.0, device=inputs.device))
            box_outputs.append(torch.zeros((batch, num_anchors * 4, *size), device=inputs.device))
        for image in range(batch):
            # white normalises to about +2.2, black to -2.1, the mean-colour padding to about 0
            ys, xs = torch.nonzero(inputs[image, 0] > 0.5, as_tuple=True)
            box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
            # anchor 0 = level P3, cell (0, 0), first anchor shape: class channel TRUE_CLASS, box channels 0..3
            class_outputs[0][image, TRUE_CLASS, 0, 0] = 20.0
            box_outputs[0][image, 0:4, 0, 0] = self.coder.encode(box, anchors[0])
        return class_outputs, box_outputs


def white_box_image(height: int, width: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Black ``height x width`` BGR image with a white rectangle covering pixels ``x1..x2-1, y1..y2-1``."""
    image = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


# (height, width), white box xyxy in original pixels: non-square, wider and taller, up- and down-scaled
CASES = [
    ((200, 300), (40, 30, 170, 120)),
    ((300, 200), (13, 57, 151, 260)),
    ((480, 640), (301, 11, 637, 300)),
    ((375, 500), (0, 200, 120, 375)),
    ((123, 457), (222, 40, 401, 99)),
    ((640, 360), (35, 400, 300, 612)),
]


@pytest.fixture
def localizer_predictor() -> Predictor:
    settings = make_postprocess_settings(None, {"nms": "hard"})
    return Predictor(BrightBoxLocalizer(), ["a", "b", "c"], [2, 5, 11], settings)


def test_predict_maps_boxes_back_to_original_pixels(localizer_predictor):
    images = [white_box_image(h, w, box) for (h, w), box in CASES]
    results = localizer_predictor.predict(images, batch_size=4)  # mixed sizes in one batch
    assert len(results) == len(CASES)
    for ((height, width), box), result in zip(CASES, results):
        assert result["boxes"].shape == (1, 4), (height, width)
        np.testing.assert_allclose(result["boxes"][0], np.asarray(box, np.float32), atol=1.0,
                                   err_msg=f"image {height}x{width}")
        assert result["labels"].tolist() == [TRUE_CLASS]
        assert result["names"] == ["c"]
        assert result["category_ids"].tolist() == [11]
        assert result["scores"][0] > 0.99


def test_predict_single_image_and_batch_agree(localizer_predictor):
    images = [white_box_image(h, w, box) for (h, w), box in CASES[:3]]
    one_by_one = [localizer_predictor.predict(image)[0] for image in images]
    batched = localizer_predictor.predict(images, batch_size=3)
    for single, together in zip(one_by_one, batched):
        np.testing.assert_allclose(single["boxes"], together["boxes"], atol=1e-4)


def test_hflip_tta_maps_mirrored_detections_back(localizer_predictor):
    # Soft-NMS keeps both views' boxes (the second one rescored by exp(-IoU^2 / 0.5) = 0.135 at IoU 1), so
    # the box found in the mirrored view (image at the right of the canvas) is checked too.
    localizer_predictor.settings = make_postprocess_settings(
        localizer_predictor.settings, {"hflip_tta": "true", "nms": "soft"})
    images = [white_box_image(h, w, box) for (h, w), box in CASES]
    for ((height, width), box), result in zip(CASES, localizer_predictor.predict(images)):
        assert result["boxes"].shape == (2, 4), (height, width)
        np.testing.assert_allclose(result["boxes"], np.asarray([box, box], np.float32), atol=1.0)
        np.testing.assert_allclose(result["scores"], [1.0, np.exp(-1 / 0.5)], atol=0.02)


def tiny_detector(seed: int = 0, image_size: int = 64) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("efficientdet_lite0", num_classes=3, image_size=image_size)


def colourful_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)
    image[..., 2] = 255 - image[..., 0] // 2  # channels differ a lot
    return image


def test_bgr_and_rgb_inputs_give_identical_results(tmp_path):
    predictor = Predictor(tiny_detector(), ["a", "b", "c"])
    bgr = colourful_image(90, 150)
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), bgr)  # lossless: reading it back gives the same pixels
    from_bgr = predictor.predict(bgr)[0]  # bgr=True is the default
    from_rgb = predictor.predict(rgb, bgr=False)[0]
    from_file = predictor.predict(path)[0]  # files: the colour order is handled when reading
    wrong = predictor.predict(rgb, bgr=True)[0]
    assert len(from_bgr["scores"]) > 0
    for other in (from_rgb, from_file):
        np.testing.assert_array_equal(from_bgr["boxes"], other["boxes"])
        np.testing.assert_array_equal(from_bgr["scores"], other["scores"])
        np.testing.assert_array_equal(from_bgr["labels"], other["labels"])
    # stating the channel order wrongly changes the answer (so the test above can fail)
    assert not np.array_equal(from_bgr["scores"], wrong["scores"])


def test_hflip_tta_on_a_real_network_keeps_boxes_inside_the_image():
    detector = tiny_detector(image_size=128)
    settings = make_postprocess_settings(None, {"hflip_tta": True, "max_detections": 50})
    predictor = Predictor(detector, ["a", "b", "c"], settings=settings)
    for height, width in ((70, 150), (150, 60)):
        result = predictor.predict(colourful_image(height, width, seed=height))[0]
        boxes = result["boxes"]
        assert 0 < len(boxes) <= 50
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= width).all() and (boxes[:, 3] <= height).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        assert np.all(np.diff(result["scores"]) <= 0)


def test_predict_rejects_unreadable_paths_and_unknown_types(tmp_path):
    from effdet.data.preprocess import ImageReadError

    predictor = Predictor(BrightBoxLocalizer(image_size=64), ["a", "b", "c"])
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ImageReadError, match="notes.txt"):
        predictor.predict(tmp_path / "notes.txt")
    with pytest.raises(TypeError, match="file path or a numpy image"):
        predictor.predict([42])


# ------------------------------------------------------------------------------------------ checkpoints


def write_lightning_checkpoint(path, image_size: int = 64, eval_section: dict | None = None) -> dict:
    """A checkpoint shaped like training's best.ckpt: raw weights under ``model.``, EMA weights (here a
    different network) under ``ema.module.``, plus the self-describing entries."""
    raw, ema = tiny_detector(seed=1, image_size=image_size), tiny_detector(seed=2, image_size=image_size)
    eval_section = eval_section or {"score_threshold": 0.001, "pre_nms_top_k": 5000, "nms": "hard",
                                    "iou_threshold": 0.5, "soft_nms_sigma": 0.5, "max_detections": 100,
                                    "every_n_epochs": 1, "backend": "pycocotools"}
    write_training_checkpoint(path, raw, ["circle", "square", "triangle"], [1, 3, 7], ema=ema, epoch=3,
                              global_step=12,
                              train_config={"eval": eval_section, "data": {"batch_size": 4, "val_batch_size": None}})
    return {"raw": raw, "ema": ema}


def test_from_checkpoint_uses_ema_weights_names_ids_and_eval_settings(tmp_path):
    path = tmp_path / "best.ckpt"
    nets = write_lightning_checkpoint(path)
    predictor = Predictor.from_checkpoint(path, device="cpu", fuse_bn=False, max_detections=20)
    assert predictor.weights_kind == "ema"
    loaded = predictor.model.state_dict()
    for key, value in nets["ema"].state_dict().items():
        torch.testing.assert_close(loaded[key], value)
    assert not torch.equal(loaded["class_net.predict.pointwise.weight"],
                           nets["raw"].state_dict()["class_net.predict.pointwise.weight"])
    assert predictor.class_names == ["circle", "square", "triangle"]
    assert predictor.category_ids == [1, 3, 7]
    assert predictor.image_size == [64, 64]
    assert predictor.fill == (127, 127, 127)  # Lite mean 127
    assert predictor.settings.nms == "hard" and predictor.settings.max_detections == 20
    assert predictor.device == torch.device("cpu")
    assert not predictor.model.training
    result = predictor.predict(colourful_image(50, 80))[0]
    assert 0 < len(result["scores"]) <= 20
    assert set(result["category_ids"].tolist()) <= {1, 3, 7}
    assert result["names"] == [predictor.class_names[i] for i in result["labels"]]


def test_from_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Predictor.from_checkpoint(tmp_path / "missing.ckpt")
    path = tmp_path / "best.ckpt"
    write_lightning_checkpoint(path)
    with pytest.raises(ValueError, match=r"unknown post-processing option\(s\) \['nmx'\].*'nms'"):
        Predictor.from_checkpoint(path, nmx="soft")
    (tmp_path / "junk.ckpt").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="junk.ckpt"):
        Predictor.from_checkpoint(tmp_path / "junk.ckpt")


def test_postprocess_settings_from_strings_and_validation():
    base = {"score_threshold": 0.001, "nms": "soft", "every_n_epochs": 1, "backend": "pycocotools"}
    settings = make_postprocess_settings(base, parse_overrides(["eval.nms=hard", "eval.score_threshold=0.05",
                                                                "eval.hflip_tta=true", "eval.max_detections=50"]))
    assert settings == PostprocessSettings(score_threshold=0.05, nms="hard", hflip_tta=True, max_detections=50)
    old_form = parse_overrides(["nms=hard", "score_threshold=0.05", "hflip_tta=true", "max_detections=50"])
    assert make_postprocess_settings(base, old_form) == settings  # deprecated, still accepted
    with pytest.raises(ValueError, match=r"nms must be one of \['soft', 'hard'\]"):
        make_postprocess_settings(None, {"nms": "fast"})
    with pytest.raises(ValueError, match="'max_detections' must be an integer"):
        make_postprocess_settings(None, {"max_detections": "2.5"})
    with pytest.raises(ValueError, match="'hflip_tta' must be true or false"):
        make_postprocess_settings(None, {"hflip_tta": "maybe"})
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["nms"])


def test_backend_keyword_is_the_deprecated_name_of_runtime(tmp_path):
    """`Predictor.from_checkpoint(backend=...)` / `.backend` keep working for one release, with a DeprecationWarning;
    `runtime=` / `.runtime` are the names now."""
    path = tmp_path / "best.ckpt"
    write_lightning_checkpoint(path)
    predictor = Predictor.from_checkpoint(path, device="cpu", runtime="torch")
    assert predictor.runtime == "torch" and "runtime=torch" in repr(predictor)
    with pytest.warns(DeprecationWarning, match=r"from_checkpoint\(backend=...\) is deprecated.*runtime='torch'"):
        old = Predictor.from_checkpoint(path, device="cpu", backend="torch")
    assert old.runtime == "torch"
    with pytest.warns(DeprecationWarning, match="Predictor.backend is deprecated"):
        assert old.backend == "torch"
    with pytest.raises(TypeError, match="both runtime='onnxruntime' and its deprecated name backend='torch'"):
        Predictor.from_checkpoint(path, runtime="onnxruntime", backend="torch")
    with pytest.raises(ValueError, match=r"unknown runtime 'tvm'; valid: \['torch', 'onnxruntime'"):
        Predictor.from_checkpoint(path, runtime="tvm")
