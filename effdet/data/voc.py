"""Pascal VOC XML annotations -> COCO dicts.

A VOC dataset has one XML per image (``Annotations/<id>.xml``) with ``<filename>``, ``<size>`` and
``<object>`` entries (``<name>``, ``<bndbox>`` ``xmin ymin xmax ymax``, ``<difficult>``), images in
``JPEGImages/`` and split lists in ``ImageSets/Main/<split>.txt``.

Coordinates: VOC boxes are 1-based inclusive pixel indices, so pixel ``xmin`` covers ``[xmin - 1, xmin)``
in continuous coordinates: COCO ``bbox = [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]``.
Category ids are 1..C in the order of the class names (given, or sorted over all files read).
``difficult`` objects are kept with ``"difficult": 1`` (``difficult="ignore"`` makes them crowd/ignore
regions, ``"drop"`` leaves them out).
"""
from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Optional, Sequence

from ..types import PathLike

logger = logging.getLogger("effdet.data.voc")

__all__ = ["read_voc_xml", "voc_sources", "voc_to_coco"]

DIFFICULT_MODES = ("keep", "ignore", "drop")


def _text(node: Optional[ET.Element], tag: str, where: str, required: bool = True) -> Optional[str]:
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None or not child.text.strip():
        if required:
            raise ValueError(f"{where}: no <{tag}>")
        return None
    return child.text.strip()


def _number(node: ET.Element, tag: str, where: str) -> float:
    value = _text(node, tag, where)
    try:
        return float(value)  # type: ignore[arg-type]
    except ValueError:
        raise ValueError(f"{where}: <{tag}> is {value!r}, not a number") from None


def read_voc_xml(path: PathLike) -> dict[str, Any]:
    """``{"filename", "width", "height", "objects": [{"name", "bbox" xywh px, "difficult"}]}`` of one XML.

    ``width``/``height`` are None when ``<size>`` is missing or 0 (the image header is read instead).
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise ValueError(f"VOC annotation '{path}' is not valid XML: {error}") from None
    where = str(path)
    size = root.find("size")
    width = height = None
    if size is not None:
        width, height = (int(float(_text(size, tag, where) or 0)) for tag in ("width", "height"))
    objects = []
    for index, obj in enumerate(root.findall("object")):
        here = f"{where} object {index + 1}"
        name = _text(obj, "name", here)
        box = obj.find("bndbox")
        if box is None:
            raise ValueError(f"{here} ('{name}'): no <bndbox>")
        xmin, ymin, xmax, ymax = (_number(box, tag, here) for tag in ("xmin", "ymin", "xmax", "ymax"))
        difficult = _text(obj, "difficult", here, required=False)
        objects.append({"name": name, "bbox": [xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1],
                        "difficult": int(float(difficult)) if difficult else 0})
    return {"filename": _text(root, "filename", where, required=False), "width": width or None,
            "height": height or None, "objects": objects}


def voc_sources(annotations: PathLike, images_dir: Optional[PathLike] = None) -> tuple[list[Path], Path]:
    """XML files and the images folder of a VOC split given as an ``Annotations`` folder, a VOC root (with
    ``Annotations/`` and ``JPEGImages/``) or an ``ImageSets/Main/<split>.txt`` list."""
    annotations = Path(annotations)
    if annotations.is_file() and annotations.suffix == ".txt":  # VOCdevkit/VOC2007/ImageSets/Main/train.txt
        root = annotations.parent.parent.parent
        stems = [line.split()[0] for line in annotations.read_text().splitlines() if line.strip()]
        xml_files = [root / "Annotations" / f"{stem}.xml" for stem in stems]
        missing = [str(p) for p in xml_files if not p.is_file()]
        if missing:
            raise ValueError(f"{len(missing)} annotation files listed in '{annotations}' do not exist, e.g. {missing[:3]}")
        return xml_files, Path(images_dir) if images_dir else root / "JPEGImages"
    if (annotations / "Annotations").is_dir():
        return sorted((annotations / "Annotations").glob("*.xml")), Path(images_dir or annotations / "JPEGImages")
    if annotations.is_dir():
        return sorted(annotations.glob("*.xml")), Path(images_dir or annotations.parent / "JPEGImages")
    raise ValueError(f"VOC annotations '{annotations}' are neither a folder of XML files, a VOC root nor a split list")


def voc_to_coco(xml_files: Sequence[PathLike], images_dir: PathLike,
                class_names: Optional[Sequence[str]] = None, difficult: str = "keep",
                exif_orientation: str = "apply", allow_outside_images: bool = False) -> dict[str, Any]:
    """A COCO dict of VOC XML files; ``file_name`` is relative to ``images_dir``: a ``<filename>`` that is
    absolute or leaves it raises ``ValueError`` naming the XML unless ``allow_outside_images``
    (:func:`effdet.data.checks.resolve_image_path`).

    Width and height come from ``<size>``; without it from the image header: the displayed size (EXIF
    orientation applied) unless ``exif_orientation="ignore"``.

    ``class_names``: category order (ids 1..C); an object of another name raises ``ValueError`` naming
    the XML. Default: the sorted names found in ``xml_files``.
    """
    if difficult not in DIFFICULT_MODES:
        raise ValueError(f"difficult must be one of {DIFFICULT_MODES}, got {difficult!r}")
    from .checks import PathOutsideImagesError, resolve_image_path
    from ..imageinfo import read_image_header

    images_dir = Path(images_dir)
    parsed = [(Path(p), read_voc_xml(p)) for p in xml_files]
    if not parsed:
        raise ValueError("no VOC annotation files (.xml) given")
    names = list(class_names) if class_names else sorted({o["name"] for _, r in parsed for o in r["objects"]})
    category_of = {name: k + 1 for k, name in enumerate(names)}
    images, annotations = [], []
    for xml_path, record in parsed:
        file_name = record["filename"] or f"{xml_path.stem}.jpg"
        try:
            resolve_image_path(images_dir, file_name, allow_outside_images)
        except PathOutsideImagesError as error:
            raise ValueError(f"'{xml_path}': <filename>: {error}") from None
        if not (images_dir / file_name).is_file():  # filename tags are often stale: try the XML's stem
            for suffix in (".jpg", ".jpeg", ".png", ".bmp"):
                if (images_dir / f"{xml_path.stem}{suffix}").is_file():
                    file_name = f"{xml_path.stem}{suffix}"
                    break
        width, height = record["width"], record["height"]
        if not width or not height:
            header = read_image_header(images_dir / file_name)
            if header is None:
                raise ValueError(f"'{xml_path}' has no <size> and its image '{images_dir / file_name}' cannot be read")
            width, height = header.size(exif_orientation)
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
        for obj in record["objects"]:
            if obj["name"] not in category_of:
                raise ValueError(f"'{xml_path}': object class '{obj['name']}' is not one of the class names {names}")
            if obj["difficult"] and difficult == "drop":
                continue
            x, y, w, h = obj["bbox"]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category_of[obj["name"]], "bbox": [x, y, w, h], "area": w * h,
                                "iscrowd": int(bool(obj["difficult"]) and difficult == "ignore"),
                                "difficult": obj["difficult"]})
    categories = [{"id": k, "name": name} for name, k in category_of.items()]
    return {"info": {"converted_from": "voc", "images_dir": str(images_dir)}, "images": images,
            "annotations": annotations, "categories": categories}
