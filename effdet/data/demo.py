"""A small synthetic COCO-format dataset for demos, smoke tests and quick training runs.

Scenes are muted, textured backgrounds (gradient + low-frequency blotches + pixel noise + faint lines)
with 0-6 saturated, optionally outlined shapes of three classes: circle, square (tilted up to 15
degrees) and triangle (any rotation). Category ids are deliberately non-contiguous (1, 3, 7) and listed
out of order, so the id <-> label mapping is exercised. Boxes are the exact pixel extent of each drawn
shape (``cv2.boundingRect`` of its mask), in COCO ``[x, y, w, h]``.

Everything is a pure function of ``seed`` (and the counts): every image has its own generator seeded
from ``(seed, split, index)``, so the same call writes the same JSON bytes and the same images.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import cv2
import numpy as np

from ..fileio import write_json_atomic

__all__ = ["DEMO_CATEGORIES", "ObjectPainter", "make_demo_dataset", "render_scene", "shape_painter"]

# (id, name): non-contiguous ids, listed out of order on purpose.
DEMO_CATEGORIES: tuple[tuple[int, str], ...] = ((7, "triangle"), (1, "circle"), (3, "square"))

_SPLITS = {"train": 0, "val": 1}
Box = tuple[int, int, int, int]  # COCO x, y, w, h in pixels


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """A low-saturation RGB colour (background material)."""
    grey = rng.uniform(70, 190)
    return np.clip(grey + rng.uniform(-25, 25, size=3), 0, 255)


def _vivid_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    """A saturated, bright RGB colour (objects)."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(190, 255), rng.uniform(170, 255)]]], dtype=np.uint8)
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
    return tuple(int(v) for v in rgb)  # type: ignore[return-value]


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Muted textured background, ``H x W x 3`` uint8 RGB."""
    angle = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = xs * math.cos(angle) + ys * math.sin(angle)
    ramp = (ramp - ramp.min()) / max(float(ramp.max() - ramp.min()), 1.0)
    start, end = _muted_colour(rng), _muted_colour(rng)
    image = start[None, None, :] * (1 - ramp[..., None]) + end[None, None, :] * ramp[..., None]
    grid = (max(2, height // 40), max(2, width // 40))
    coarse = rng.normal(0, 16, size=grid + (1,)) + rng.normal(0, 6, size=grid + (3,))  # mostly brightness
    coarse = coarse.astype(np.float32)
    image += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image += rng.normal(0, rng.uniform(4, 12), size=(height, width, 3)).astype(np.float32)
    canvas = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(0, 5))):  # faint distractor lines
        points = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(2)]
        colour = tuple(int(v) for v in _muted_colour(rng))
        cv2.line(canvas, points[0], points[1], colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    return canvas


def _shape_polygon(name: str, centre: tuple[float, float], size: float, rng: np.random.Generator) -> Optional[np.ndarray]:
    """Vertices (float ``[P, 2]``) of a square or triangle whose extent is about ``size``; None for circles."""
    cx, cy = centre
    if name == "square":
        theta = math.radians(rng.uniform(-15, 15))
        side = size / (abs(math.cos(theta)) + abs(math.sin(theta)))
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float64) * side / 2
    elif name == "triangle":
        theta = rng.uniform(0, 2 * math.pi)
        radius = size / math.sqrt(3)  # side = size
        corners = np.array(
            [[radius * math.cos(a), radius * math.sin(a)] for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3)]
        )
    else:
        return None
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return corners @ rotation.T + np.array([cx, cy])


def _draw(target: np.ndarray, name: str, centre: tuple[float, float], size: float,
          polygon: Optional[np.ndarray], colour: Any, thickness: int, line_type: int) -> None:
    """Draw a filled (thickness -1) or outlined shape; coordinates with 4 fractional bits."""
    shift = 4
    factor = 1 << shift
    if polygon is None:
        centre_fixed = (int(round(centre[0] * factor)), int(round(centre[1] * factor)))
        cv2.circle(target, centre_fixed, int(round(size / 2 * factor)), colour, thickness, line_type, shift)
    else:
        points = [np.round(polygon * factor).astype(np.int32)]
        if thickness < 0:
            cv2.fillPoly(target, points, colour, line_type, shift)
        else:
            cv2.polylines(target, points, True, colour, thickness, line_type, shift)


# paint(target, colour, thickness, line_type): thickness -1 draws the object, > 0 its outline.
ObjectPainter = Callable[[np.ndarray, Any, int, int], None]


def shape_painter(name: str, centre: tuple[float, float], size: float, rng: np.random.Generator) -> ObjectPainter:
    """Painter of a circle / square / triangle of extent about ``size`` px at ``centre``."""
    polygon = _shape_polygon(name, centre, size, rng)

    def paint(target: np.ndarray, colour: Any, thickness: int, line_type: int) -> None:
        _draw(target, name, centre, size, polygon, colour, thickness, line_type)

    return paint


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area (1.0 when one box contains the other)."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / float(min(a[2] * a[3], b[2] * b[3]))


def _extent_and_clear(mask: np.ndarray, centre: tuple[float, float], size: float) -> tuple[Box, int]:
    """Bounding box (COCO xywh) and pixel count of the non-zero pixels of ``mask``, which holds one object drawn
    around ``centre``; then zero those pixels. Looks only at a window around the object when the object lies inside
    it (on a 3000 px canvas with hundreds of objects, scanning and clearing the whole mask per object would
    dominate); the objects are connected shapes, so one that does not touch the window's border lies inside it,
    and the result is that of the whole mask."""
    height, width = mask.shape
    reach = 1.5 * size + 16  # past any painter's extent (digits: italic shear, thick strokes)
    x0, y0 = max(0, int(centre[0] - reach)), max(0, int(centre[1] - reach))
    x1, y1 = min(width, int(centre[0] + reach) + 1), min(height, int(centre[1] + reach) + 1)
    window = mask[y0:y1, x0:x1]
    x, y, w, h = cv2.boundingRect(window)
    inside = (x > 0 or x0 == 0) and (y > 0 or y0 == 0) and (x + w < window.shape[1] or x1 == width) \
        and (y + h < window.shape[0] or y1 == height)
    if w > 0 and inside:
        area = int(np.count_nonzero(window))
        window[:] = 0
        return (x + x0, y + y0, w, h), area
    box, area = cv2.boundingRect(mask), int(np.count_nonzero(mask))  # reaches past the window: the whole mask
    mask[:] = 0
    return box, area


def render_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    max_objects: int = 6,
    empty_fraction: float = 0.1,
    object_size: tuple[float, float] = (32.0, 160.0),
    max_overlap: float = 0.2,
    categories: Sequence[tuple[int, str]] = DEMO_CATEGORIES,
    painter: Optional[Callable[..., "ObjectPainter"]] = None,
    min_objects: int = 1,
    large_fraction: float = 0.0,
    large_size: tuple[float, float] = (96.0, 400.0),
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One synthetic scene.

    Returns:
        ``(image, objects)``: ``H x W x 3`` uint8 RGB and a list of ``{"name", "bbox" (COCO xywh ints),
        "area" (mask pixels)}``. Object extents are log-uniform in ``object_size`` px (at most 60% of
        the shorter image side); two objects' boxes share at most ``max_overlap`` of the smaller box, so
        every object stays mostly visible. ``categories`` (``(id, name)`` pairs) and ``painter``
        (``painter(name, centre, size, rng) -> ObjectPainter``; default: :func:`shape_painter`, the
        circle/square/triangle shapes) choose what is drawn. A non-empty scene has ``min_objects``–``max_objects``
        objects (fewer when no free place is found); each is drawn from ``large_size`` instead of ``object_size``
        with probability ``large_fraction`` (a few large objects among many small ones).
    """
    painter = painter or shape_painter
    image = _background(rng, height, width)
    names = [name for _, name in sorted(categories)]
    count = 0 if rng.random() < empty_fraction else int(rng.integers(min_objects, max_objects + 1))
    objects: list[dict[str, Any]] = []
    mask = np.zeros((height, width), dtype=np.uint8)
    for _ in range(count):
        for _attempt in range(30):
            name = names[int(rng.integers(0, len(names)))]
            low, high = large_size if large_fraction > 0 and rng.random() < large_fraction else object_size
            high = min(high, 0.6 * min(height, width))
            size = math.exp(rng.uniform(math.log(min(low, high)), math.log(high)))
            margin = size / 2 + 2
            centre = (rng.uniform(margin, width - margin), rng.uniform(margin, height - margin))
            paint = painter(name, centre, size, rng)
            paint(mask, 255, -1, cv2.LINE_8)
            box, area = _extent_and_clear(mask, centre, size)
            if box[2] < 4 or box[3] < 4 or any(_overlap(box, other["bbox"]) > max_overlap for other in objects):
                continue
            colour = _vivid_colour(rng)
            paint(image, colour, -1, cv2.LINE_AA)
            if rng.random() < 0.5:
                outline = tuple(int(v * 0.35) for v in colour)
                paint(image, outline, 2, cv2.LINE_AA)
            objects.append({"name": name, "bbox": tuple(int(v) for v in box), "area": area})
            break
    return image, objects


def _make_split(root: Path, split: str, count: int, seed: int, width_range: tuple[int, int],
                height_range: tuple[int, int], scene_options: dict[str, Any],
                description: str = "effdet synthetic shapes demo", supercategory: str = "shape") -> Path:
    """Write ``root/split/*.jpg`` and ``root/annotations/instances_<split>.json``; ``scene_options`` go to
    :func:`render_scene` (its ``categories`` are the file's categories, in the order given)."""
    image_dir = root / split
    image_dir.mkdir(parents=True, exist_ok=True)
    categories = scene_options.get("categories", DEMO_CATEGORIES)
    id_of_name = {name: cid for cid, name in categories}
    images, annotations = [], []
    for index in range(count):
        rng = np.random.default_rng([seed, _SPLITS[split], index])
        width = int(rng.integers(width_range[0], width_range[1] + 1))
        height = int(rng.integers(height_range[0], height_range[1] + 1))
        image, objects = render_scene(rng, height, width, **scene_options)
        file_name = f"{split}_{index:05d}.jpg"
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode {file_name}")
        encoded.tofile(str(image_dir / file_name))
        image_id = index + 1
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for item in objects:
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": id_of_name[item["name"]],
                "bbox": [float(v) for v in item["bbox"]],
                "area": float(item["area"]),
                "iscrowd": 0,
            })
    data = {
        "info": {"description": f"{description} ({split})", "seed": seed},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": cid, "name": name, "supercategory": supercategory} for cid, name in categories],
    }
    annotation_dir = root / "annotations"
    annotation_dir.mkdir(parents=True, exist_ok=True)
    json_path = annotation_dir / f"instances_{split}.json"
    write_json_atomic(json_path, data, indent=None)
    return json_path


def make_demo_dataset(
    root: Union[str, os.PathLike],
    num_train: int = 400,
    num_val: int = 80,
    seed: int = 0,
    width_range: tuple[int, int] = (320, 640),
    height_range: tuple[int, int] = (240, 480),
    max_objects: int = 6,
    empty_fraction: float = 0.1,
    object_size: tuple[float, float] = (32.0, 160.0),
) -> dict[str, str]:
    """Write the demo dataset under ``root`` and return its paths.

    Layout: ``root/train/*.jpg``, ``root/val/*.jpg``, ``root/annotations/instances_{train,val}.json``
    (JSON written atomically). Image sizes are uniform in ``width_range`` x ``height_range``.

    Returns:
        ``{"root", "train_images", "val_images", "train_annotations", "val_annotations"}`` as strings.
    """
    root_path = Path(root)
    scene_options = {"max_objects": max_objects, "empty_fraction": empty_fraction, "object_size": object_size}
    train_json = _make_split(root_path, "train", num_train, seed, width_range, height_range, scene_options)
    val_json = _make_split(root_path, "val", num_val, seed, width_range, height_range, scene_options)
    return {
        "root": str(root_path),
        "train_images": str(root_path / "train"),
        "val_images": str(root_path / "val"),
        "train_annotations": str(train_json),
        "val_annotations": str(val_json),
    }
