"""Data checks for COCO-format detection datasets: one report of everything wrong or unusual.

Every problem is a :class:`Finding` naming the file, image id or annotation id, with a severity:

* ``fatal``   training refuses the file as it is (not COCO, duplicate ids, unknown category ids, a
              ``file_name`` outside the images folder, ...);
* ``error``   training would run but silently lose or misread data (a missing or corrupt image, a
              negative/NaN/zero box, an annotation of an unknown image, a box written as xyxy, ...);
* ``warning`` unusual but trainable (crowd regions, images without boxes, EXIF-rotated images,
              boxes partly outside their image, categories without boxes);
* ``info``    statistics (class balance, box sizes).

:func:`check_dataset` runs the checks; ``level`` decides how much of each image is read:
``"fast"`` (the JSON and one directory listing per folder: what ``train.py`` runs before it builds
anything), ``"headers"`` (also each image's header: real size, EXIF orientation, pixel limit) or
``"full"`` (also decodes every image: truncated and corrupt files). The real size is the displayed one
(EXIF orientation applied; width and height swapped for orientations 5-8) unless ``exif_orientation="ignore"``
(config ``data.exif_orientation``), as training loads the images. :func:`fix_dataset` returns a
cleaned copy of the JSON and the list of changes; the input is never modified.

The rules are the dataset's too: :class:`effdet.data.CocoDetection` reads the JSON, checks entries and ids, resolves
paths and judges boxes with these modules, and refuses a file on the first fatal finding.

Modules, one job each: :mod:`.findings` (the findings model and the report), :mod:`.paths` (path safety, folder
listings), :mod:`.entries` (reading the JSON, required keys, unique ids, category ids, image sizes), :mod:`.images`
(image files), :mod:`.boxes` (box verdicts), :mod:`.statistics` (class balance, box sizes), :mod:`.fix` (the cleaned
copy), :mod:`.check` (the whole check and training's preflight).

The checks that need the model's settings (objects too small for the anchors at the input size, more objects than
``eval.max_detections``) are :mod:`effdet.data.model_checks`, beside this package (they use the tiles' rule).

Boxes: COCO ``[x, y, w, h]`` in pixels. A box is *partly outside* when it crosses the image border by
more than :data:`BORDER_TOLERANCE` px (sub-pixel overshoot from rounding is normal and ignored).
"""
from __future__ import annotations

from .boxes import BORDER_TOLERANCE, MIN_BOX_SIZE
from .check import LEVELS, check_dataset, preflight
from .entries import load_annotations
from .findings import DESCRIPTIONS, SEVERITIES, DataCheckError, DataReport, Finding
from .fix import fix_dataset
from .paths import PathLike, PathOutsideImagesError, resolve_image_path
from .statistics import COCO_AREA_BUCKETS, SIZE_HISTOGRAM_EDGES

__all__ = [
    "BORDER_TOLERANCE",
    "DataCheckError",
    "DataReport",
    "Finding",
    "MIN_BOX_SIZE",
    "PathOutsideImagesError",
    "SEVERITIES",
    "check_dataset",
    "fix_dataset",
    "load_annotations",
    "preflight",
    "resolve_image_path",
]
