"""COCO evaluation time on synthetic data of realistic shape: pycocotools against faster-coco-eval."""
from __future__ import annotations

import statistics
import time

import numpy as np

from effdet.evaluation.report import evaluate_coco, load_coco_gt

from .common import run_ours


def synthetic_coco_data(
    num_images: int = 500,
    dets_per_image: int = 100,
    num_classes: int = 80,
    seed: int = 0,
    image_size: tuple[int, int] = (640, 480),
) -> tuple[dict, list[dict]]:
    """Random COCO ground truth and detections of realistic shape, for timing and backend checks.

    Each image gets 1..15 objects (small, medium and large) with sparse category ids; detections are
    jittered copies of the objects (some with a wrong class) plus random boxes, ``dets_per_image``
    in total per image, with distinct scores in 0..1.

    Returns:
        (COCO ground-truth dict, list of COCO result dicts)
    """
    rng = np.random.default_rng(seed)
    width, height = image_size
    category_ids = [1 + 2 * k for k in range(num_classes)]  # gaps, like COCO's 1..90
    images, annotations, results = [], [], []

    def random_boxes(count: int) -> np.ndarray:
        side = np.exp(rng.uniform(np.log(4), np.log(min(width, height) * 0.8), size=(count, 2)))
        x = rng.uniform(0, width - side[:, 0])
        y = rng.uniform(0, height - side[:, 1])
        return np.stack([x, y, side[:, 0], side[:, 1]], axis=1)  # xywh

    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "width": width, "height": height, "file_name": f"{image_id:06d}.jpg"})
        num_objects = int(rng.integers(1, 16))
        gt_boxes = random_boxes(num_objects)
        gt_cats = rng.choice(category_ids, size=num_objects)
        for box, cat in zip(gt_boxes, gt_cats):
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(cat),
                "bbox": [round(float(v), 2) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0,
            })
        num_near = min(dets_per_image, num_objects * 2)
        source = rng.integers(0, num_objects, size=num_near)
        near = gt_boxes[source].copy()
        near[:, :2] += rng.normal(0, 0.1, size=(num_near, 2)) * near[:, 2:]
        near[:, 2:] *= np.exp(rng.normal(0, 0.15, size=(num_near, 2)))
        near_cats = np.where(rng.random(num_near) < 0.8, gt_cats[source], rng.choice(category_ids, size=num_near))
        far = random_boxes(dets_per_image - num_near)
        far_cats = rng.choice(category_ids, size=len(far))
        boxes = np.concatenate([near, far])
        cats = np.concatenate([near_cats, far_cats])
        scores = np.concatenate([rng.uniform(0.3, 1.0, num_near), rng.uniform(0.0, 0.5, len(far))])
        for box, cat, score in zip(boxes, cats, scores):
            results.append({
                "image_id": image_id, "category_id": int(cat),
                "bbox": [round(float(v), 2) for v in box], "score": round(float(score), 6),
            })
    categories = [{"id": c, "name": f"class_{c}", "supercategory": "thing"} for c in category_ids]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def benchmark_coco_eval(
    num_images: int = 500,
    dets_per_image: int = 100,
    backend: str = "pycocotools",
    *,
    repeats: int = 3,
    seed: int = 0,
) -> float:
    """Median wall-clock seconds of one :func:`evaluate_coco` call on :func:`synthetic_coco_data`.

    Timed: loading the results, evaluate, accumulate, summarize and per-class AP (the GT index is
    built once beforehand, as :class:`CocoEvaluator` does).
    """
    gt_dict, results = synthetic_coco_data(num_images, dets_per_image, seed=seed)
    gt = load_coco_gt(gt_dict, backend)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        evaluate_coco(gt, results, backend=backend, verbose=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(args) -> list[str]:
    r = run_ours("cocoeval", 3, threads=args.threads)
    fast = r["faster_coco_eval_s"]
    rows = [f"| COCO eval, 500 images × 100 detections | pycocotools {r['pycocotools_s']:.2f} s | "
            f"faster-coco-eval {fast:.2f} s (×{r['pycocotools_s'] / fast:.1f}) |" if fast else
            f"| COCO eval, 500 images × 100 detections | pycocotools {r['pycocotools_s']:.2f} s | n/a |",
            "|---|---|---|"]
    print(rows[0], flush=True)
    return rows
