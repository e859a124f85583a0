"""Generated COCO-format datasets of different kinds, for the convergence benchmark and quick experiments.

Three kinds, all deterministic functions of ``seed`` (the scene renderer and file writer of
:mod:`effdet.data.demo`, with other objects and sizes):

``shapes``
    the demo set: 0-6 circles / squares / triangles of 32-160 px on 320-640 x 240-480 images (ids 7, 1, 3).
``small``
    many small objects: 4-30 shapes of 16-40 px on 256-320 x 224-288 images, so that at a training size of
    256 px they stay about 16-40 px (the P3/P4 anchors' range).
``similar``
    10 classes that look alike: the digits 0-9 in Hershey fonts (one colour family per image, random stroke
    width and font), 24-112 px tall on 256-384 px images, non-contiguous ids ``11 + 3·d`` listed out of order;
    10% of the images have no object.
``aerial``
    large, crowded scenes for sliced inference: 1,500-3,000 px canvases with 50-400 shapes of 12-40 px each (so
    most images hold more than 100 objects) and about 1% large ones (96-400 px); at a 384-640 px input the whole
    image shrinks them below the smallest anchor.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np

from .demo import DEMO_CATEGORIES, ObjectPainter, _make_split

__all__ = ["DIGIT_CATEGORIES", "KINDS", "digit_painter", "make_synthetic_dataset", "object_size_summary"]

# (id, name): the ten digits with non-contiguous ids, listed out of order on purpose.
DIGIT_CATEGORIES: tuple[tuple[int, str], ...] = tuple(
    (11 + 3 * d, str(d)) for d in (3, 0, 7, 1, 9, 4, 2, 8, 5, 6))

_FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
          cv2.FONT_HERSHEY_SCRIPT_SIMPLEX)


def digit_painter(name: str, centre: tuple[float, float], size: float, rng: np.random.Generator) -> ObjectPainter:
    """Painter of the digit ``name`` whose glyph is about ``size`` px tall, centred at ``centre``.

    The font, the stroke width (about 1/8 of the height) and an italic shear are drawn from ``rng`` once, so
    the mask and the image get the same glyph. Outlines (``thickness > 0``) are a thicker stroke.
    """
    font = _FONTS[int(rng.integers(0, len(_FONTS)))]
    stroke_ratio = rng.uniform(0.08, 0.16)
    shear = rng.uniform(-0.25, 0.25)
    (text_w, text_h), _ = cv2.getTextSize(name, font, 1.0, 1)
    scale = size / max(text_h, 1) * 0.85
    stroke = max(1, int(round(size * stroke_ratio)))

    def paint(target: np.ndarray, colour: Any, thickness: int, line_type: int) -> None:
        width = stroke + (thickness if thickness > 0 else 0)
        pad = int(size) + 4 * width + 4
        tile = np.zeros((2 * pad, 2 * pad), np.uint8)
        origin = (int(round(pad - text_w * scale / 2)), int(round(pad + text_h * scale / 2)))
        cv2.putText(tile, name, origin, font, scale, 255, width, line_type)
        matrix = np.array([[1.0, shear, centre[0] - pad - shear * pad], [0.0, 1.0, centre[1] - pad]])
        height, width_px = target.shape[:2]
        warped = cv2.warpAffine(tile, matrix, (width_px, height), flags=cv2.INTER_LINEAR)
        if target.ndim == 2:
            np.maximum(target, np.where(warped > 127, np.uint8(colour), np.uint8(0)), out=target)
        else:
            alpha = (warped.astype(np.float32) / 255.0)[..., None]
            blended = target.astype(np.float32) * (1 - alpha) + np.array(colour, np.float32) * alpha
            target[:] = np.clip(blended, 0, 255).astype(np.uint8)

    return paint


# kind -> (image width range, height range, render_scene options, description, supercategory)
KINDS: dict[str, dict[str, Any]] = {
    "shapes": dict(width_range=(320, 640), height_range=(240, 480),
                   scene=dict(max_objects=6, empty_fraction=0.1, object_size=(32.0, 160.0)),
                   description="effdet synthetic shapes demo", supercategory="shape"),
    "small": dict(width_range=(256, 320), height_range=(224, 288),
                  scene=dict(max_objects=30, empty_fraction=0.05, object_size=(16.0, 40.0), max_overlap=0.1),
                  description="effdet synthetic small shapes", supercategory="shape"),
    "similar": dict(width_range=(256, 384), height_range=(256, 384),
                    scene=dict(max_objects=6, empty_fraction=0.1, object_size=(24.0, 112.0),
                               categories=DIGIT_CATEGORIES, painter=digit_painter),
                    description="effdet synthetic digits", supercategory="digit"),
    "aerial": dict(width_range=(1500, 3000), height_range=(1500, 3000),
                   scene=dict(min_objects=50, max_objects=400, empty_fraction=0.0, object_size=(12.0, 40.0),
                              max_overlap=0.1, large_fraction=0.01, large_size=(96.0, 400.0)),
                   description="effdet synthetic aerial scenes", supercategory="shape"),
}


def make_synthetic_dataset(kind: str, root: Union[str, os.PathLike], num_train: int = 400, num_val: int = 80,
                           seed: int = 0) -> dict[str, str]:
    """Write the dataset ``kind`` (``shapes`` | ``small`` | ``similar`` | ``aerial``) under ``root`` and return its paths.

    Layout as :func:`effdet.data.demo.make_demo_dataset`: ``root/{train,val}/*.jpg`` and
    ``root/annotations/instances_{train,val}.json`` (COCO ``[x, y, w, h]`` boxes, the exact pixel extent of each
    drawn object). ``shapes`` with the same counts and seed writes the same files as ``make_demo_dataset``.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; valid kinds: {sorted(KINDS)}")
    spec = KINDS[kind]
    scene = dict(spec["scene"])
    scene.setdefault("categories", DEMO_CATEGORIES)
    root_path = Path(root)
    paths = {"root": str(root_path), "train_images": str(root_path / "train"), "val_images": str(root_path / "val")}
    for split, count in (("train", num_train), ("val", num_val)):
        json_path = _make_split(root_path, split, count, seed, spec["width_range"], spec["height_range"], scene,
                                spec["description"], spec["supercategory"])
        paths[f"{split}_annotations"] = str(json_path)
    return paths


def object_size_summary(annotations: dict[str, Any]) -> dict[str, float]:
    """Median / min / max of ``sqrt(w·h)`` over a COCO dict's boxes (px), for checks and docs."""
    sizes = [math.sqrt(a["bbox"][2] * a["bbox"][3]) for a in annotations["annotations"]]
    if not sizes:
        return {"count": 0}
    return {"count": len(sizes), "median": float(np.median(sizes)), "min": min(sizes), "max": max(sizes)}
