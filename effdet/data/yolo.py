"""YOLO txt labels <-> COCO dicts.

A YOLO dataset has one ``<image stem>.txt`` per image where YOLO tools look for it: the image's path with its
last ``images`` folder replaced by ``labels`` (``ROOT/images/train/a.jpg`` -> ``ROOT/labels/train/a.txt``), or
beside the image; one object per line: ``class cx cy w h`` with the centre and size normalised by the
image width/height (0..1); a line with more than 5 numbers is a polygon ``class x1 y1 x2 y2 ...`` (its
bounding box is used). Class names come from a ``classes.txt`` (one name per line) or a ``data.yaml``
(``names:`` as a list or an ``{index: name}`` mapping). Images without a label file are negatives.

COCO side: category id = YOLO class index + 1 (COCO ids start at 1), ``bbox`` ``[x, y, w, h]`` in pixels.
Image sizes are read from the file headers (nothing is decoded): the displayed size (EXIF orientation applied, as
YOLO labels are drawn on the displayed image) unless ``exif_orientation="ignore"``.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from ..types import PathLike

logger = logging.getLogger("effdet.data.yolo")

__all__ = ["coco_to_yolo", "label_path_for", "labels_dir_for", "load_data_yaml", "read_class_names", "yolo_to_coco"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def read_class_names(source: Union[PathLike, Sequence[str]]) -> list[str]:
    """Class names from a list, a ``classes.txt``/``obj.names`` file, or a ``data.yaml`` (``names:``)."""
    if not isinstance(source, (str, os.PathLike)):
        names = [str(n) for n in source]
    else:
        path = Path(source)
        if not path.is_file():
            raise ValueError(f"class names file '{path}' does not exist")
        if path.suffix.lower() in (".yaml", ".yml"):
            names = _names_from_yaml(path)
        else:
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise ValueError(f"no class names in {source!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"class names repeat in {source!r}: {names}")
    return names


def _names_from_yaml(path: Path) -> list[str]:
    import yaml

    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ValueError(f"'{path}' is not valid YAML: {error}") from None
    names = spec.get("names") if isinstance(spec, dict) else None
    if isinstance(names, dict):
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            raise ValueError(f"'{path}': names keys must be class indices 0..N-1, got {list(names)}") from None
        if keys != list(range(len(keys))):
            raise ValueError(f"'{path}': names keys must be 0..{len(keys) - 1}, got {keys}")
        return [str(names[k] if k in names else names[str(k)]) for k in keys]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise ValueError(f"'{path}' has no 'names:' list or mapping (YOLO data.yaml)")


def load_data_yaml(path: PathLike, split: str = "train") -> tuple[Path, Path, list[str]]:
    """``(images folder, labels folder, class names)`` of one split of an Ultralytics-style ``data.yaml``."""
    import yaml

    path = Path(path)
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(spec, dict) or split not in spec:
        raise ValueError(f"'{path}' has no '{split}:' entry (keys: {sorted(spec) if isinstance(spec, dict) else []})")
    root = Path(spec.get("path") or path.parent)
    if not root.is_absolute():
        root = path.parent / root
    images = Path(spec[split]) if Path(str(spec[split])).is_absolute() else root / str(spec[split])
    return images, labels_dir_for(images), _names_from_yaml(path)


def _images_part_to_labels(path: Path) -> Optional[Path]:
    """``path`` with its last ``images`` component replaced by ``labels``; None when it has none."""
    parts = list(path.parts)
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] == "images":
            return Path(*parts[:index], "labels", *parts[index + 1:])
    return None


def label_path_for(image_path: PathLike) -> Path:
    """Where YOLO tools (Ultralytics, darknet) look for an image's label file: the image's absolute path with
    its last ``images`` folder replaced by ``labels`` and the extension by ``.txt``
    (``ROOT/images/train/a.jpg`` -> ``ROOT/labels/train/a.txt``); the ``.txt`` beside the image when no folder
    of its path is called ``images``."""
    path = Path(os.path.abspath(image_path))
    folder = _images_part_to_labels(path.parent)
    return ((folder / path.name) if folder is not None else path).with_suffix(".txt")


def labels_dir_for(images_dir: PathLike) -> Path:
    """The YOLO convention for a folder: ``.../images/...`` -> ``.../labels/...`` (the last ``images`` part), when
    that exists; else the images folder itself (labels beside the images). Per image see :func:`label_path_for`."""
    images_dir = Path(images_dir)
    candidate = _images_part_to_labels(images_dir)
    return candidate if candidate is not None and candidate.is_dir() else images_dir


def _parse_line(line: str, where: str, num_classes: int) -> tuple[int, tuple[float, float, float, float]]:
    """(class index, normalised x1 y1 x2 y2) of one label line."""
    fields = line.split()
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise ValueError(f"{where}: not numbers: {line!r} (expected 'class cx cy w h')") from None
    if len(values) < 5 or (len(values) > 5 and len(values) % 2 == 0):
        raise ValueError(f"{where}: {len(values)} numbers in {line!r}; expected 'class cx cy w h' (5) or a polygon "
                         "'class x1 y1 x2 y2 ...'")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: non-finite number in {line!r}")
    cls = values[0]
    if cls != int(cls) or not 0 <= int(cls) < num_classes:
        raise ValueError(f"{where}: class {fields[0]} is not an index 0..{num_classes - 1} of the class names")
    if len(values) == 5:
        cx, cy, w, h = values[1:]
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    else:
        xs, ys = values[1::2], values[2::2]
        box = (min(xs), min(ys), max(xs), max(ys))
    return int(cls), box


def yolo_to_coco(images_dir: PathLike, labels_dir: Optional[PathLike] = None,
                 class_names: Union[PathLike, Sequence[str], None] = None,
                 exif_orientation: str = "apply") -> dict[str, Any]:
    """A COCO dict of a YOLO folder. ``file_name`` entries are relative to ``images_dir`` (sub-folders kept).

    Args:
        images_dir: folder of images (searched recursively): a split's images folder, or the dataset root
            (``ROOT/images/...`` with ``ROOT/labels/...``).
        labels_dir: folder of ``.txt`` labels mirroring ``images_dir``; default: each image's label where YOLO
            tools look for it (:func:`label_path_for`: the last ``images`` folder of its path becomes
            ``labels``), else beside the image.
        class_names: names list, or a ``classes.txt`` / ``data.yaml``; default: ``classes.txt``,
            ``obj.names`` or ``data.yaml`` in the labels folder, the images folder or their parents.
        exif_orientation: ``"apply"`` (default): the normalised labels scale by the displayed size (width and
            height swapped for EXIF orientations 5-8); ``"ignore"``: by the stored size.

    Raises ``ValueError`` naming the file and line of a malformed label, and saying where labels were looked
    for when there are images but not a single label file. Files whose header Pillow cannot read are left out
    and listed in ``info.skipped``.
    """
    from ..imageinfo import read_image_header

    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ValueError(f"YOLO images folder '{images_dir}' does not exist")
    explicit_labels = Path(labels_dir) if labels_dir is not None else None
    if class_names is None:
        class_names = _find_class_file(images_dir, explicit_labels or labels_dir_for(images_dir))
    names = read_class_names(class_names)
    images, annotations, skipped = [], [], []
    looked_at: list[Path] = []  # where the first images' labels were looked for (for the error message)
    label_files = 0
    paths = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    for path in paths:
        relative = path.relative_to(images_dir)
        header = read_image_header(path)
        if header is None:
            skipped.append({"file_name": relative.as_posix(), "reason": "not a readable image"})
            logger.warning("YOLO import: skipping '%s': not a readable image", path)
            continue
        image_id = len(images) + 1
        width, height = header.size(exif_orientation)
        images.append({"id": image_id, "file_name": relative.as_posix(), "width": width, "height": height})
        if explicit_labels is not None:
            candidates = [(explicit_labels / relative).with_suffix(".txt")]
        else:
            candidates = list(dict.fromkeys([label_path_for(path), path.with_suffix(".txt")]))
        if len(looked_at) < 4:
            looked_at += candidates
        label_path = next((c for c in candidates if c.is_file()), None)
        if label_path is None:
            continue
        label_files += 1
        for number, line in enumerate(label_path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            cls, (x1, y1, x2, y2) = _parse_line(line, f"{label_path}:{number}", len(names))
            box = [x1 * width, y1 * height, (x2 - x1) * width, (y2 - y1) * height]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cls + 1,
                                "bbox": [round(v, 3) for v in box], "area": round(box[2] * box[3], 3),
                                "iscrowd": 0})
    if not images:
        raise ValueError(f"no images found in YOLO images folder '{images_dir}' (extensions {IMAGE_SUFFIXES})")
    if not label_files:
        rule = (f"in the labels folder '{explicit_labels}', mirroring '{images_dir}'" if explicit_labels is not None
                else "where YOLO tools look (the last 'images' folder of the image's path becomes 'labels') and "
                     "beside the image")
        raise ValueError(
            f"YOLO dataset '{images_dir}': {len(images)} images but not one label file. Each image's .txt was "
            f"looked for {rule}, e.g. {[str(p) for p in looked_at]}. Put the labels there (ROOT/images/... with "
            f"ROOT/labels/...) or name their folder (--labels / data.<split>.annotations)")
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(names)]
    info = {"converted_from": "yolo", "images_dir": str(images_dir),
            "labels_dir": str(explicit_labels) if explicit_labels is not None else "images -> labels rule",
            "skipped": skipped}
    return {"info": info, "images": images, "annotations": annotations, "categories": categories}


def _find_class_file(images_dir: Path, labels_dir: Path) -> Path:
    places = [labels_dir, images_dir, labels_dir.parent, images_dir.parent, images_dir.parent.parent]
    for folder in places:
        for name in ("classes.txt", "obj.names", "data.yaml", "dataset.yaml"):
            if (folder / name).is_file():
                return folder / name
    raise ValueError(f"no class names for the YOLO folder '{images_dir}': pass them (data.classes / --classes) "
                     f"or put a classes.txt or data.yaml in {[str(p) for p in places[:4]]}")


def coco_to_yolo(data: dict[str, Any], labels_dir: PathLike, decimals: int = 6) -> list[str]:
    """Write YOLO labels for a COCO dict: ``labels_dir/<file_name stem>.txt`` per image and ``classes.txt``.

    Class index = position of the category id in ascending order; crowd regions are left out. Returns the
    class names in index order. A ``file_name`` that is absolute or leaves the folder (``..``) raises
    ``ValueError`` before anything is written (:func:`effdet.data.checks.resolve_image_path`).
    """
    from .checks import PathOutsideImagesError, resolve_image_path

    labels_dir = Path(labels_dir)
    targets = {}
    for image in data["images"]:
        try:
            targets[image["id"]] = resolve_image_path(labels_dir, image["file_name"], folder="labels folder")
        except PathOutsideImagesError as error:
            raise ValueError(f"image id {image['id']}: {error}") from None
    categories = sorted(data["categories"], key=lambda c: c["id"])
    index_of = {c["id"]: k for k, c in enumerate(categories)}
    names = [str(c["name"]) for c in categories]
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for ann in data["annotations"]:
        if not ann.get("iscrowd"):
            by_image.setdefault(ann["image_id"], []).append(ann)
    labels_dir.mkdir(parents=True, exist_ok=True)
    for image in data["images"]:
        width, height = float(image["width"]), float(image["height"])
        lines = []
        for ann in by_image.get(image["id"], []):
            x, y, w, h = (float(v) for v in ann["bbox"])
            values = ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)
            lines.append(f"{index_of[ann['category_id']]} " + " ".join(f"{v:.{decimals}f}" for v in values))
        target = targets[image["id"]].with_suffix(".txt")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    (labels_dir / "classes.txt").write_text("".join(n + "\n" for n in names), encoding="utf-8")
    return names
