"""``--fix``: a cleaned copy of a COCO dict and one line per change; the input is never modified.

Boxes: COCO ``[x, y, w, h]`` in pixels; repaired boxes are clipped to their image and rounded to 1/1000 px.
"""
from __future__ import annotations

import copy
from typing import Any

from .boxes import box_verdict, file_written_as_xyxy, looks_normalized
from .entries import REQUIRED_KEYS, image_size
from .findings import DataReport

# Image-file problems: fix_dataset drops the image and its annotations.
FILE_CODES = ("missing_file", "unreadable_image", "image_too_large", "path_outside")


def fix_dataset(data: dict[str, Any], report: DataReport) -> tuple[dict[str, Any], list[str]]:
    """A cleaned deep copy of ``data`` and one line per change; ``data`` itself is not modified.

    What happens to each problem is in :data:`~effdet.data.checks.findings.DESCRIPTIONS` ("fix: ..."). Image-file
    problems come from ``report`` (run :func:`~effdet.data.checks.check_dataset` with level ``"full"`` to catch
    corrupt files); the JSON problems are re-derived here.
    """
    data = copy.deepcopy(data)
    changes: list[str] = []
    file_problems = {f.image_id: f for f in report.findings if f.code in FILE_CODES}
    real_sizes = {f.image_id: f.detail for f in report.findings
                  if f.code in ("size_mismatch", "bad_image_size") and f.detail}

    categories, seen = [], set()
    for index, entry in enumerate(data["categories"]):
        if not isinstance(entry, dict) or any(k not in entry for k in REQUIRED_KEYS["categories"]):
            changes.append(f"dropped malformed categories[{index}]")
        elif entry["id"] in seen:
            changes.append(f"dropped duplicate category id {entry['id']!r} ('{entry['name']}')")
        else:
            seen.add(entry["id"])
            categories.append(entry)
    category_ids = seen

    images, image_ids = [], set()
    for index, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or any(k not in entry for k in REQUIRED_KEYS["images"]):
            changes.append(f"dropped malformed images[{index}]")
            continue
        ident = entry["id"]
        if ident in image_ids:
            changes.append(f"dropped duplicate image id {ident!r} ('{entry['file_name']}'); its annotations stay "
                           "with the first entry of that id")
            continue
        if ident in file_problems:
            problem = file_problems[ident]
            changes.append(f"dropped image id {ident!r} ('{entry['file_name']}') and its annotations: {problem.code}")
            continue
        if ident in real_sizes:
            size = real_sizes[ident]
            changes.append(f"image id {ident!r} ('{entry['file_name']}'): width/height {entry.get('width')!r} x "
                           f"{entry.get('height')!r} -> {size['width']} x {size['height']} (the file's real size)")
            entry["width"], entry["height"] = size["width"], size["height"]
        if image_size(entry) is None:
            changes.append(f"dropped image id {ident!r} ('{entry['file_name']}'): no valid size")
            continue
        image_ids.add(ident)
        images.append(entry)
    sizes = {e["id"]: image_size(e) for e in images}
    dropped_images = {e["id"] for e in data["images"] if isinstance(e, dict) and "id" in e} - image_ids

    valid_anns = [a for a in data["annotations"]
                  if isinstance(a, dict) and all(k in a for k in REQUIRED_KEYS["annotations"])]
    if len(valid_anns) != len(data["annotations"]):
        changes.append(f"dropped {len(data['annotations']) - len(valid_anns)} malformed annotation entries")
    normalized = looks_normalized(valid_anns, sizes)
    if normalized:
        changes.append("all boxes were normalised (0..1): scaled to pixels by their image's width/height")
    xyxy_file = not normalized and file_written_as_xyxy(
        [(a["bbox"], *sizes[a["image_id"]]) for a in valid_anns
         if a["image_id"] in sizes and a["category_id"] in category_ids])[0]
    xyxy_summary_at, converted = len(changes), 0  # the summary line goes before the per-box lines
    annotations, ann_ids = [], set()
    next_id = 1 + max([a["id"] for a in valid_anns if isinstance(a["id"], int)] or [0])
    for ann in valid_anns:
        ann_id = ann["id"]
        if ann["category_id"] not in category_ids:
            changes.append(f"dropped annotation id {ann_id!r}: unknown category_id {ann['category_id']!r}")
            continue
        if ann["image_id"] not in image_ids:
            if ann["image_id"] in dropped_images:
                changes.append(f"dropped annotation id {ann_id!r} with its image id {ann['image_id']!r}")
            else:
                changes.append(f"dropped annotation id {ann_id!r}: image id {ann['image_id']!r} is not in 'images'")
            continue
        width, height = sizes[ann["image_id"]]
        code, box, message = box_verdict(ann["bbox"], width, height, normalized, xyxy_file)
        if box is None:
            changes.append(f"dropped annotation id {ann_id!r}: {code}: {message}")
            continue
        if code is not None or normalized:
            before = ann["bbox"]
            ann["bbox"] = [round(v, 3) for v in box]
            if "area" in ann:
                ann["area"] = round(ann["bbox"][2] * ann["bbox"][3], 3)
            if code is not None:
                changes.append(f"annotation id {ann_id!r}: bbox {before} -> {ann['bbox']} ({code})")
            converted += int(xyxy_file and code == "box_xyxy")
        if ann_id in ann_ids:
            changes.append(f"annotation id {ann_id!r} was used twice: this one renumbered to {next_id}")
            ann["id"] = next_id
            next_id += 1
        ann_ids.add(ann["id"])
        annotations.append(ann)
    if xyxy_file:
        changes.insert(xyxy_summary_at, f"the file is written as [x1, y1, x2, y2] (box_format_suspect): all "
                       f"{converted} boxes converted to [x, y, w, h], also those that fit when read as [x, y, w, h]")
    cleaned = dict(data)
    cleaned.update(images=images, annotations=annotations, categories=categories)
    return cleaned, changes
