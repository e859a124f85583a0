"""Statistics of a dataset: class balance, box sizes (COCO area buckets and a histogram of sqrt(area)), images
without boxes and categories without boxes (warnings), and their text for the report.

Areas are of COCO ``[x, y, w, h]`` boxes in pixels as written: ``w * h``.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import TYPE_CHECKING, Any, Dict, List

from .boxes import parse_bbox

if TYPE_CHECKING:
    from .findings import DataReport

COCO_AREA_BUCKETS = (("small", 0.0, 32.0**2), ("medium", 32.0**2, 96.0**2), ("large", 96.0**2, math.inf))
SIZE_HISTOGRAM_EDGES = (0, 8, 16, 32, 64, 96, 128, 256, 512, math.inf)  # sqrt(area) px


def statistics(report: "DataReport", data: Dict[str, Any], anns: List[Dict[str, Any]],
               category_names: Dict[Any, str], image_by_id: Dict[Any, Dict[str, Any]]) -> None:
    """Fill ``report.stats`` (counts, ``class_balance``, ``box_sizes``) from the well-formed annotations ``anns``
    (crowd regions and annotations of unknown categories left out) and warn about empty images and categories."""
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
    for image_id, entry in image_by_id.items():
        if not boxes_per_image.get(image_id):
            report.add("warning", "empty_image", "no boxes (a negative example; fine if intended)",
                       image_id=image_id, file=entry["file_name"])
    balance = [{"id": cid, "name": str(name), "boxes": int(boxes_per_category.get(cid, 0))}
               for cid, name in sorted(category_names.items(), key=lambda item: str(item[0]))]
    for row in balance:
        if row["boxes"] == 0:
            report.add("warning", "unused_category", f"category '{row['name']}' (id {row['id']}) has no boxes: "
                       "the model will never learn it")
    buckets = {name: sum(1 for a in areas if low <= a < high) for name, low, high in COCO_AREA_BUCKETS}
    histogram = []
    for low, high in zip(SIZE_HISTOGRAM_EDGES[:-1], SIZE_HISTOGRAM_EDGES[1:]):
        label = f"{low}-{high}" if math.isfinite(high) else f">= {low}"
        histogram.append((label, sum(1 for a in areas if low <= math.sqrt(a) < high)))
    report.stats.update(
        images=len(data["images"]), annotations=len(data["annotations"]), categories=len(data["categories"]),
        class_balance=balance, box_sizes={"total": len(areas), **buckets, "histogram": histogram},
        crowd_regions=sum(1 for a in anns if a.get("iscrowd")),
        images_without_boxes=sum(1 for i in image_by_id if not boxes_per_image.get(i)),
    )


def format_statistics(stats: Dict[str, Any]) -> List[str]:
    """The report's class-balance and box-size sections (bars of ``#``), as lines."""
    lines: List[str] = []
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
