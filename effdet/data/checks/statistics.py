"""Statistics of a dataset: class balance, box sizes (COCO area buckets and a histogram of sqrt(area)), images
without boxes, and their text for the report.

Areas are of COCO ``[x, y, w, h]`` boxes in pixels as written: ``w * h``.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Any

from .boxes import parse_bbox

COCO_AREA_BUCKETS = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, math.inf))
SIZE_HISTOGRAM_EDGES = (0, 8, 16, 32, 64, 96, 128, 256, 512, math.inf)  # sqrt(area) px


def statistics(data: dict[str, Any], anns: list[dict[str, Any]], category_names: dict[Any, str],
               image_by_id: dict[Any, dict[str, Any]]) -> tuple[dict[str, Any], list[Any]]:
    """``(stats, ids of the images without boxes)`` from the well-formed annotations ``anns`` (crowd regions and
    annotations of unknown categories left out). ``stats``: counts, ``class_balance`` (rows ``id``, ``name``,
    ``boxes``), ``box_sizes`` (COCO area buckets and the sqrt(area) histogram)."""
    boxes_per_category: Counter = Counter()
    boxes_per_image: Counter = Counter()
    areas = []
    for ann in anns:
        if ann.get("iscrowd") or ann["category_id"] not in category_names:
            continue
        boxes_per_image[ann["image_id"]] += 1
        boxes_per_category[ann["category_id"]] += 1
        parsed = parse_bbox(ann["bbox"])
        if parsed is not None and parsed[2] > 0 and parsed[3] > 0:
            areas.append(parsed[2] * parsed[3])
    empty = [image_id for image_id in image_by_id if not boxes_per_image.get(image_id)]
    balance = [{"id": cid, "name": str(name), "boxes": int(boxes_per_category.get(cid, 0))}
               for cid, name in sorted(category_names.items(), key=lambda item: str(item[0]))]
    buckets = {name: sum(1 for a in areas if low <= a < high) for name, low, high in COCO_AREA_BUCKETS}
    histogram = []
    for low, high in zip(SIZE_HISTOGRAM_EDGES[:-1], SIZE_HISTOGRAM_EDGES[1:]):
        label = f"{low}-{high}" if math.isfinite(high) else f">= {low}"
        histogram.append((label, sum(1 for a in areas if low <= math.sqrt(a) < high)))
    stats = dict(
        images=len(data["images"]), annotations=len(data["annotations"]), categories=len(data["categories"]),
        class_balance=balance, box_sizes={"total": len(areas), **buckets, "histogram": histogram},
        crowd_regions=sum(1 for a in anns if a.get("iscrowd")), images_without_boxes=len(empty),
    )
    return stats, empty


def format_statistics(stats: dict[str, Any]) -> list[str]:
    """The report's class-balance and box-size sections (bars of ``#``), as lines."""
    lines: list[str] = []
    balance = stats.get("class_balance")
    if balance:
        lines += ["", "class balance (boxes per category, crowd regions excluded):"]
        most = max(row["boxes"] for row in balance) or 1
        width = max(len(f"{row['name']} (id {row['id']})") for row in balance)
        for row in balance:
            label = f"{row['name']} (id {row['id']})"
            bar = "#" * int(round(30 * row["boxes"] / most))
            lines.append(f"  {label:<{width}}  {row['boxes']:>7}  {bar}")
    sizes = stats.get("box_sizes")
    if sizes and sizes["total"]:
        total = sizes["total"]
        buckets = ", ".join(f"{name} {sizes[name]} ({100 * sizes[name] / total:.0f}%)"
                            for name, _, _ in COCO_AREA_BUCKETS)
        lines += ["", f"box sizes (COCO buckets by area: small < 32², medium < 96², large): {buckets}"]
        most = max(count for _, count in sizes["histogram"]) or 1
        for label, count in sizes["histogram"]:
            lines.append(f"  sqrt(area) {label:>10} px  {count:>7}  {'#' * int(round(30 * count / most))}")
    return lines
