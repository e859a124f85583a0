"""Where training's datasets come from: COCO JSON as is, or Pascal VOC / YOLO converted in memory.

:func:`dataset_sources` turns a config's ``data`` section into the keyword arguments of
:class:`effdet.data.CocoDetection` for ``train`` and ``val``, after the fast data checks
(:func:`effdet.data.checks.preflight`): fatal problems stop the run here, before a model is built.

``data.format``:
  * ``coco``: ``{train,val}.images`` folder, ``{train,val}.annotations`` COCO JSON.
  * ``voc``:  ``images`` = the JPEGImages folder (optional when ``annotations`` is a VOC root),
    ``annotations`` = a folder of XML files, a VOC root, or an ``ImageSets/Main/<split>.txt`` list.
  * ``yolo``: ``images`` = images folder (a split's, or the dataset root), ``annotations`` = labels folder
    mirroring it, or ``null``: each image's label where YOLO tools look for it (its path's last ``images``
    folder becomes ``labels``; :func:`effdet.data.yolo.label_path_for`). Images without a single label stop
    with an error that says where labels were looked for.
``data.exif_orientation``: ``apply`` (images as displayed: YOLO/VOC sizes from the displayed image) or ``ignore``.
``data.classes``: class names (a list, or a ``classes.txt`` / ``data.yaml`` path). Needed for YOLO unless a
classes file sits beside the data; for VOC the default is the sorted names found in both splits.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from ..choices import DATA_FORMATS
from .checks import preflight

__all__ = ["DATA_FORMATS", "dataset_sources", "resolve_data_path"]


def resolve_data_path(root: Optional[str], path: str) -> str:
    """``path`` if absolute or no root is set, else ``root/path`` (config ``data.root``)."""
    if root and not os.path.isabs(path):
        return os.path.join(root, path)
    return path


def _resolve(root: Optional[str], path: Optional[str]) -> Optional[str]:
    return resolve_data_path(root, str(path)) if path not in (None, "", "???") else None


def _classes(data_cfg: Any, root: Optional[str]) -> Any:
    classes = data_cfg.get("classes")
    if classes is None:
        return None
    if isinstance(classes, str):
        return _resolve(root, classes)
    return [str(c) for c in classes]


def dataset_sources(data_cfg: Any) -> dict[str, dict[str, Any]]:
    """``{"train": kwargs, "val": kwargs}`` for ``CocoDetection`` (``images_dir``, ``annotations_json``,
    ``annotations_data``, ``allow_outside_images`` and ``exif_orientation``), checked with the fast data checks."""
    from ..imageinfo import check_exif_orientation_mode, set_max_image_pixels

    fmt = str(data_cfg.get("format") or "coco")
    if fmt not in DATA_FORMATS:
        raise ValueError(f"data.format is {fmt!r}; valid choices: {list(DATA_FORMATS)}")
    if data_cfg.get("max_image_pixels") is not None:
        set_max_image_pixels(int(data_cfg.max_image_pixels))
    root = data_cfg.get("root")
    allow = bool(data_cfg.get("allow_outside_images") or False)
    exif = check_exif_orientation_mode(data_cfg.get("exif_orientation") or "apply", "data.exif_orientation")
    splits = ("train", "val")
    sources: dict[str, dict[str, Any]] = {}
    if fmt == "coco":
        from .checks import load_annotations

        for split in splits:
            path = _resolve(root, data_cfg[split].annotations)
            data = load_annotations(path) if path and os.path.isfile(path) else None  # read once, for both uses
            sources[split] = {"images_dir": _resolve(root, data_cfg[split].images), "annotations_json": path,
                              "annotations_data": data}
    elif fmt == "voc":
        from .voc import read_voc_xml, voc_sources, voc_to_coco

        found = {split: voc_sources(_resolve(root, data_cfg[split].annotations), _resolve(root, data_cfg[split].images))
                 for split in splits}
        names = _classes(data_cfg, root)
        if isinstance(names, str):
            from .yolo import read_class_names

            names = read_class_names(names)
        if names is None:  # one class list for both splits: the sorted union
            names = sorted({o["name"] for files, _ in found.values() for p in files for o in read_voc_xml(p)["objects"]})
        for split, (files, images_dir) in found.items():
            sources[split] = {"images_dir": str(images_dir), "annotations_json": _resolve(root, data_cfg[split].annotations),
                              "annotations_data": voc_to_coco(files, images_dir, names, exif_orientation=exif,
                                                              allow_outside_images=allow)}
    else:
        from .yolo import yolo_to_coco

        names = _classes(data_cfg, root)
        for split in splits:
            images_dir = _resolve(root, data_cfg[split].images)
            labels = _resolve(root, data_cfg[split].annotations)
            sources[split] = {"images_dir": images_dir, "annotations_json": labels or images_dir,
                              "annotations_data": yolo_to_coco(images_dir, labels, names, exif)}
    for split, source in sources.items():
        preflight(source["images_dir"], source["annotations_json"], data=source["annotations_data"],
                  allow_outside_images=allow, split=split, exif_orientation=exif)
        source["allow_outside_images"] = allow
        source["exif_orientation"] = exif
    return sources
