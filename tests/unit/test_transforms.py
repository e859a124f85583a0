"""Box-aware transforms: boxes must follow the pixels exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from effdet.data.transforms import (
    DetectionSample,
    Letterbox,
    RandomHorizontalFlip,
    RandomScaleCrop,
    ToTensor,
    eval_transforms,
    torch_seeded_rng,
    train_transforms,
)
from effdet.data.preprocess import IMAGENET_MEAN, fill_from_mean, letterbox

MAGENTA = (255, 0, 255)
BACKGROUND = (90, 110, 100)


def _scene(height: int, width: int, box: tuple) -> DetectionSample:
    """Plain background with one magenta rectangle covering pixel box (x1, y1, x2, y2), x2/y2 exclusive."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = MAGENTA
    return DetectionSample(
        image=image,
        boxes=np.array([box], dtype=np.float32),
        labels=np.array([2], dtype=np.int64),
        crowd_boxes=np.zeros((0, 4), dtype=np.float32),
    )


def _magenta_extent(image: np.ndarray):
    """Continuous xyxy extent of pixels that are mostly magenta, or None."""
    image = image.astype(np.int32)
    mostly = (image[..., 0] > 200) & (image[..., 1] < 60) & (image[..., 2] > 200)
    ys, xs = np.nonzero(mostly)
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


@pytest.mark.parametrize(
    "shape, size",
    [((300, 500), 256), ((480, 200), 256), ((123, 457), (192, 320)), ((720, 1280), 384), ((64, 48), 512)],
)
def test_letterbox_maps_box_by_scale_and_pads_bottom_right(shape, size):
    height, width = shape
    box = (width // 5, height // 4, width // 5 + width // 3, height // 4 + height // 2)
    sample = _scene(height, width, box)
    out = Letterbox(size)(sample)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    expected_scale = min(out_h / height, out_w / width)
    assert out.image.shape == (out_h, out_w, 3) and out.image.dtype == np.uint8
    assert out.scale == pytest.approx(expected_scale)
    np.testing.assert_allclose(out.boxes[0], np.array(box, np.float32) * expected_scale, rtol=1e-6)
    np.testing.assert_allclose(_magenta_extent(out.image), out.boxes[0], atol=1.0)
    # Content at the top-left, padding (the mean colour) right and bottom.
    content_h, content_w = round(height * expected_scale), round(width * expected_scale)
    fill = np.array(fill_from_mean(IMAGENET_MEAN), np.uint8)
    assert (out.image[content_h:, :] == fill).all() and (out.image[:, content_w:] == fill).all()
    assert (out.image[:content_h, :content_w] != fill).any(axis=-1).all()


def test_letterbox_function_returns_scale_and_custom_fill():
    image = np.full((100, 400, 3), 7, np.uint8)
    canvas, scale = letterbox(image, 200, fill=(1, 2, 3))
    assert scale == pytest.approx(0.5)
    assert canvas.shape == (200, 200, 3)
    assert (canvas[:50] == 7).all() and (canvas[50:] == (1, 2, 3)).all()


def test_horizontal_flip_maps_x1_x2_to_w_minus_x2_w_minus_x1():
    sample = _scene(60, 100, (10, 5, 30, 25))
    sample.crowd_boxes = np.array([[0, 0, 40, 10]], np.float32)
    out = RandomHorizontalFlip(p=1.0, rng=np.random.default_rng(0))(sample)
    np.testing.assert_array_equal(out.boxes[0], [70, 5, 90, 25])
    np.testing.assert_array_equal(out.crowd_boxes[0], [60, 0, 100, 10])
    np.testing.assert_array_equal(_magenta_extent(out.image), [70, 5, 90, 25])
    np.testing.assert_array_equal(out.labels, [2])
    unchanged = RandomHorizontalFlip(p=0.0, rng=np.random.default_rng(0))(sample)
    np.testing.assert_array_equal(unchanged.boxes, sample.boxes)


@pytest.mark.parametrize("seed", range(40))
def test_random_scale_crop_boxes_follow_pixels(seed):
    rng = np.random.default_rng(seed)
    height, width = int(rng.integers(200, 700)), int(rng.integers(200, 700))
    bw, bh = int(rng.integers(20, width // 2)), int(rng.integers(20, height // 2))
    x1, y1 = int(rng.integers(0, width - bw)), int(rng.integers(0, height - bh))
    sample = _scene(height, width, (x1, y1, x1 + bw, y1 + bh))
    transform = RandomScaleCrop(256, scale_range=(0.1, 2.0), rng=rng)
    out = transform(sample)

    assert out.image.shape == (256, 256, 3) and out.image.dtype == np.uint8
    expected_scale = min(256 / height, 256 / width)
    assert 0.1 * expected_scale - 1e-9 <= out.scale <= 2.0 * expected_scale + 1e-9
    assert len(out.boxes) == len(out.labels)
    extent = _magenta_extent(out.image)
    if len(out.boxes):
        box = out.boxes[0]
        assert (box >= 0).all() and (box <= 256).all()
        assert box[2] - box[0] >= 2 and box[3] - box[1] >= 2
        assert extent is not None
        np.testing.assert_allclose(extent, box, atol=2.0)
        assert out.labels[0] == 2
    # A rectangle entirely inside the canvas and at least 4 px on each side is never dropped.
    scaled = np.array([x1, y1, x1 + bw, y1 + bh]) * out.scale
    if extent is not None and (extent[2:] - extent[:2] >= 4).all() and scaled.max() < 200:
        assert len(out.boxes) == 1


def test_random_scale_crop_drops_boxes_mostly_cut_off():
    # 100 x 200 image, output (200, 200), jitter 2: scaled to 200 x 400, so only a random x offset in
    # [0, 200]. The red channel encodes the source column, which reveals the offset after the fact.
    image = np.zeros((100, 200, 3), np.uint8)
    image[..., 0] = np.arange(200, dtype=np.uint8)[None, :]
    starts = np.arange(0, 200, 20)
    boxes = np.stack([starts, np.full(10, 10), starts + 20, np.full(10, 90)], axis=1).astype(np.float32)
    sample = DetectionSample(image, boxes, np.arange(10), np.zeros((0, 4), np.float32))
    seen_kept = seen_dropped = 0
    for seed in range(30):
        out = RandomScaleCrop((200, 200), scale_range=(2.0, 2.0), rng=np.random.default_rng(seed))(sample)
        assert out.scale == pytest.approx(2.0)
        offset_x = 2.0 * float(out.image[50, 0, 0]) + 0.5  # output column 0 shows source x = (0.5 + ox) / 2
        for label, box in enumerate(boxes):
            left, right = box[0] * 2 - offset_x, box[2] * 2 - offset_x
            visible = (min(right, 200.0) - max(left, 0.0)) / 40.0
            kept = np.nonzero(out.labels == label)[0]
            if visible > 0.25:
                assert len(kept) == 1, (seed, label, visible)
                expected = [max(left, 0.0), 20.0, min(right, 200.0), 180.0]
                np.testing.assert_allclose(out.boxes[kept[0]], expected, atol=2.0)
                seen_kept += 1
            elif visible < 0.15:
                assert len(kept) == 0, (seed, label, visible)
                seen_dropped += 1
    assert seen_kept > 50 and seen_dropped > 50


def test_random_scale_crop_small_scale_pads_with_fill():
    sample = _scene(100, 100, (10, 10, 50, 50))
    out = RandomScaleCrop(200, scale_range=(0.5, 0.5), fill=(1, 2, 3), rng=np.random.default_rng(0))(sample)
    assert out.scale == pytest.approx(1.0)
    np.testing.assert_allclose(out.boxes[0], [10, 10, 50, 50], atol=1e-5)
    assert (out.image[100:] == (1, 2, 3)).all() and (out.image[:, 100:] == (1, 2, 3)).all()


def test_crowd_boxes_are_transformed_but_not_filtered_by_visibility():
    sample = _scene(100, 100, (10, 10, 50, 50))
    sample.crowd_boxes = np.array([[0, 0, 100, 100]], np.float32)
    out = Letterbox(50)(sample)
    np.testing.assert_allclose(out.crowd_boxes, [[0, 0, 50, 50]])


def test_train_and_eval_transforms_output_uint8_chw_tensor():
    sample = _scene(240, 320, (10, 10, 100, 100))
    for transform in (train_transforms(128), eval_transforms(128)):
        out = transform(sample)
        assert isinstance(out.image, torch.Tensor)
        assert out.image.dtype == torch.uint8 and out.image.shape == (3, 128, 128)
        assert out.image.is_contiguous()
        assert out.boxes.dtype == torch.float32 and out.labels.dtype == torch.int64
    tensor = ToTensor()(sample)
    assert torch.equal(tensor.image[:, 20, 20], torch.tensor(MAGENTA, dtype=torch.uint8))


def test_torch_seeded_rng_follows_torch_seed():
    torch.manual_seed(123)
    first = torch_seeded_rng().random(3)
    torch.manual_seed(123)
    again = torch_seeded_rng().random(3)
    torch.manual_seed(124)
    other = torch_seeded_rng().random(3)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("factor", [0.75, 0.6])
def test_shrinking_averages_instead_of_aliasing_in_training_and_inference(factor):
    """1-px black/white stripes shrunk by a factor between 0.5 and 1: each output pixel must average what it covers
    (INTER_AREA), in the training crop and in the letterbox alike, so the result is much closer to uniform grey
    than bilinear sampling (the rule before, between 0.5x and 1x), which keeps near-black and near-white
    pixels. That aliasing cost a third of the val AP on the thin strokes of the similar-digits set
    (docs/convergence.md)."""
    import cv2

    stripes = np.zeros((200, 200, 3), np.uint8)
    stripes[:, ::2] = 255
    sample = DetectionSample(image=stripes, boxes=np.array([[20, 20, 120, 120]], np.float32),
                             labels=np.array([0], np.int64), crowd_boxes=np.zeros((0, 4), np.float32))
    size = int(200 * factor)
    cropped = RandomScaleCrop(size, scale_range=(1.0, 1.0), rng=np.random.default_rng(0))(sample).image
    boxed, scale = letterbox(stripes, size)
    assert scale == pytest.approx(factor)
    sampled = cv2.resize(stripes, (size, size), interpolation=cv2.INTER_LINEAR)[2:-2, 2:-2].astype(np.float32)
    for image in (cropped, boxed):
        inner = image[2:-2, 2:-2].astype(np.float32)  # away from the border
        assert abs(inner.mean() - 127.5) < 4
        assert inner.std() < 0.8 * sampled.std(), (inner.std(), sampled.std())


@pytest.mark.parametrize("side,jitter", [(640, 1.25), (320, 1.5)])  # a shrink by 0.5 and an enlargement by 1.2
def test_random_filtered_resize_is_pillows_bilinear_or_bicubic_of_the_whole_image(side, jitter):
    """``resize="random_filtered"`` (data.train_resize, the reference effdet's training resize): each crop equals
    Pillow's antialiased bilinear or bicubic resize of the *whole* image (to ±2 levels), cut at the crop offset (computed here from
    the box the crop moved), and both filters are drawn. The boxes follow the same geometry as the default."""
    from PIL import Image

    rng = np.random.default_rng(1)
    image = (rng.random((side, side, 3)) * 255).astype(np.uint8)
    image = np.asarray(Image.fromarray(image).resize((side // 8, side // 8)).resize((side, side), Image.BICUBIC))
    image = image.copy()
    image[::7] = 255  # thin lines: the two filters differ on them
    scale = jitter * 256 / side
    resized = {name: np.asarray(Image.fromarray(image).resize((round(side * scale),) * 2, method)).astype(int)
               for name, method in (("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC))}
    centre = np.array([[side * 0.47, side * 0.47, side * 0.53, side * 0.53]], np.float32)
    crop = RandomScaleCrop(256, scale_range=(jitter, jitter), min_visible=0.0, rng=np.random.default_rng(3),
                           resize="random_filtered")
    drawn = set()
    for _ in range(8):
        sample = DetectionSample(image=image, boxes=centre, labels=np.array([0]), crowd_boxes=np.zeros((0, 4), np.float32))
        out = crop(sample)
        offset_x, offset_y = (centre[0, :2] * scale - out.boxes[0, :2]).round().astype(int)
        assert out.image.shape == (256, 256, 3) and out.image.dtype == np.uint8
        errors = {name: np.abs(out.image.astype(int) - full[offset_y:offset_y + 256, offset_x:offset_x + 256]).max()
                  for name, full in resized.items()}
        name = min(errors, key=errors.get)
        assert errors[name] <= 2 and max(errors.values()) > 8, errors  # Pillow rounds per region: ±2 levels
        drawn.add(name)
        np.testing.assert_allclose(out.boxes, centre * scale - [offset_x, offset_y, offset_x, offset_y], atol=1e-3)
    assert drawn == {"bilinear", "bicubic"}


def test_train_resize_is_a_checked_config_key_and_reaches_the_training_crop(tmp_path):
    from effdet.engine.schema import ConfigError, load_train_config

    demo = "configs/demo.yaml"
    assert load_train_config(demo, []).data.train_resize == "area"  # the default: what inference does
    assert load_train_config(demo, ["data.train_resize=random_filtered"]).data.train_resize == "random_filtered"
    with pytest.raises(ConfigError, match="data.train_resize"):
        load_train_config(demo, ["data.train_resize=bicubic"])
    from effdet.data.synthetic import make_synthetic_dataset
    from effdet.engine.datamodule import DetectionDataModule

    make_synthetic_dataset("shapes", tmp_path, num_train=2, num_val=1, seed=0)
    for value in ("area", "random_filtered"):
        cfg = load_train_config(demo, [f"data.root={tmp_path}", f"data.train_resize={value}", "data.num_workers=0"])
        module = DetectionDataModule(cfg.data, [64, 64], [0.5, 0.5, 0.5], seed=0)
        crop = module.train_images.transform.transforms[0]
        assert isinstance(crop, RandomScaleCrop) and crop.resize == value
        assert tuple(module.train_set[0]["image"].shape) == (3, 64, 64)
    with pytest.raises(ValueError, match="resize"):
        RandomScaleCrop(64, resize="lanczos")


def test_random_filtered_resize_handles_any_size_and_scale():
    """Odd image sizes and jitter factors (the covered size rounds up past the last source pixel): every crop is
    the canvas size, and the part the image covers is the image's resampled pixels, the rest the fill."""
    rng = np.random.default_rng(0)
    for _ in range(40):
        height, width = (int(v) for v in rng.integers(17, 500, size=2))
        image = np.full((height, width, 3), 200, np.uint8)
        crop = RandomScaleCrop(128, scale_range=(0.3, 2.0), fill=(7, 7, 7), min_visible=0.0,
                               rng=np.random.default_rng(int(rng.integers(1 << 30))), resize="random_filtered")
        out = crop(DetectionSample(image=image, boxes=np.zeros((0, 4), np.float32), labels=np.zeros(0, np.int64),
                                   crowd_boxes=np.zeros((0, 4), np.float32)))
        assert out.image.shape == (128, 128, 3)
        covered_w = min(128, int(round(width * out.scale)))
        covered_h = min(128, int(round(height * out.scale)))
        assert (out.image[: covered_h - 1, : covered_w - 1] == 200).all()
        assert (out.image[covered_h + 1 :] == 7).all() and (out.image[:, covered_w + 1 :] == 7).all()
