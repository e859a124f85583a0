"""Small datasets written for tests: COCO dicts and files whose boxes are all below the smallest anchor."""
from __future__ import annotations

import json
from pathlib import Path

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
