"""Small datasets written for tests: COCO dicts and files whose boxes are all below the smallest anchor, large
images with small objects (tiled training), and the VOC / YOLO layouts of a COCO dataset."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np


def small_box_coco(num_images: int = 20, side: tuple[float, float] = (10, 18)) -> dict:
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


def write_small_box_dataset(root: Path) -> Path:
    """A dataset (images + COCO files) whose boxes (10-18 px) are all below Lite0's smallest anchor (24 px at 256)."""
    import cv2

    coco = small_box_coco(num_images=4)
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


def write_voc(coco: dict, images_dir: Path, root: Path, split: str) -> None:
    """VOC layout from a COCO dict: Annotations/*.xml (1-based inclusive pixels), JPEGImages/, ImageSets/Main."""
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    names = {c["id"]: c["name"] for c in coco["categories"]}
    stems = []
    for image in coco["images"]:
        shutil.copy(images_dir / image["file_name"], root / "JPEGImages" / image["file_name"])
        objects = ""
        for ann in (a for a in coco["annotations"] if a["image_id"] == image["id"]):
            x, y, w, h = ann["bbox"]
            objects += (f"<object><name>{escape(names[ann['category_id']])}</name><difficult>0</difficult>"
                        f"<bndbox><xmin>{x + 1:g}</xmin><ymin>{y + 1:g}</ymin><xmax>{x + w:g}</xmax>"
                        f"<ymax>{y + h:g}</ymax></bndbox></object>")
        stem = Path(image["file_name"]).stem
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><filename>{image['file_name']}</filename><size><width>{image['width']}</width>"
            f"<height>{image['height']}</height><depth>3</depth></size>{objects}</annotation>")
        stems.append(stem)
    with open(root / "ImageSets" / "Main" / f"{split}.txt", "a") as handle:
        handle.write("".join(s + "\n" for s in stems))


def write_yolo(coco: dict, images_dir: Path, root: Path, split: str) -> None:
    """Ultralytics layout: images/<split>/, labels/<split>/, data.yaml with names."""
    shutil.copytree(images_dir, root / "images" / split)
    from effdet.data.yolo import coco_to_yolo

    names = coco_to_yolo(coco, root / "labels" / split)
    (root / "labels" / split / "classes.txt").unlink()
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n"
                                    + "".join(f"  {k}: {n}\n" for k, n in enumerate(names)))


LARGE_CATEGORIES = [{"id": 1, "name": "box"}, {"id": 4, "name": "disc"}]  # ids with a gap, as users' files have


def write_large_image_dataset(root: Path, num_train: int = 2, num_val: int = 1, size: tuple[int, int] = (480, 640),
                              objects: int = 12, seed: int = 0) -> Path:
    """COCO layout (``train/``, ``val/``, ``annotations/instances_{train,val}.json``) of ``size`` (h, w) JPEGs on a
    noisy background, each with ``objects`` filled squares ("box") and discs ("disc") of 16-40 px, none touching the
    border. Objects of several images of the same split do not depend on each other (seeded per image)."""
    import cv2

    height, width = size
    for split, count in (("train", num_train), ("val", num_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for number in range(count):
            rng = np.random.default_rng([seed, 0 if split == "train" else 1, number])
            picture = rng.integers(60, 120, size=(height, width, 3), dtype=np.uint8)
            image_id = number + 1
            for _ in range(objects):
                side = int(rng.integers(16, 41))
                x, y = int(rng.integers(2, width - side - 2)), int(rng.integers(2, height - side - 2))
                category = LARGE_CATEGORIES[int(rng.integers(0, 2))]
                colour = tuple(int(v) for v in rng.integers(170, 256, size=3))
                if category["name"] == "box":
                    picture[y:y + side, x:x + side] = colour
                else:
                    cv2.circle(picture, (x + side // 2, y + side // 2), side // 2, colour, -1)
                annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category["id"],
                                    "bbox": [x, y, side, side], "area": side * side, "iscrowd": 0})
            name = f"{split}_{number:03d}.jpg"
            cv2.imwrite(str(root / split / name), picture)
            images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": LARGE_CATEGORIES}))
    return root


def window_starts(length: int, size: int, overlap: float) -> list[int]:
    """Tile/slice starts along one side, written out from the rule (every ``size * (1 - overlap)`` px, the last
    flush with the end; one window at 0 when the side fits), independently of effdet.ops.slicing."""
    if length <= size:
        return [0]
    stride = int(size * (1 - overlap))
    starts, position = [], 0
    while position + size < length:
        starts.append(position)
        position += stride
    return starts + [length - size]


def expected_tiles(coco: dict, size: int, overlap: float, min_visible: float) -> list[int]:
    """Per tile (image by image, row by row) the number of boxes it keeps: clipped to the tile, at least 1 px per
    side and ``min_visible`` of the box's area inside."""
    counts = []
    for image in coco["images"]:
        boxes = [a["bbox"] for a in coco["annotations"] if a["image_id"] == image["id"] and not a.get("iscrowd")]
        for y in window_starts(image["height"], size, overlap):
            for x in window_starts(image["width"], size, overlap):
                x2, y2 = min(x + size, image["width"]), min(y + size, image["height"])
                kept = 0
                for bx, by, bw, bh in boxes:
                    w, h = min(bx + bw, x2) - max(bx, x), min(by + bh, y2) - max(by, y)
                    kept += w >= 1 and h >= 1 and w * h >= min_visible * bw * bh
                counts.append(kept)
    return counts
