"""Box verdicts: when a COCO ``bbox`` is a box, what training does with it, and what the checker and ``--fix``
say about it.

Boxes: COCO ``[x, y, w, h]`` in pixels as written in the JSON; :func:`training_box` and :func:`clip_box` give
``[x1, y1, x2, y2]`` pixels clipped to the image; the repaired boxes of :func:`box_verdict` are ``[x, y, w, h]``.
A box is *partly outside* when it crosses the image border by more than :data:`BORDER_TOLERANCE` px (sub-pixel
overshoot from rounding is normal and ignored).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Optional, Sequence


BORDER_TOLERANCE = 1.0  # px a box may cross its image border without a finding
MIN_BOX_SIZE = 1.0  # px; a box narrower or shorter than this once clipped to its image is dropped

Box = tuple[float, float, float, float]


def finite_number(value: Any) -> Optional[float]:
    """``value`` as a finite float (numbers and numeric text; not booleans), else None."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def parse_bbox(bbox: Any) -> Optional[Box]:
    """A bbox as 4 floats (numbers or numeric text; not booleans), or None when it is not 4 finite numbers."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        return None
    values = [finite_number(v) for v in bbox]
    if any(v is None for v in values):
        return None
    return tuple(values)  # type: ignore[return-value]


def is_plain_bbox(bbox: Any) -> bool:
    """Whether a bbox is a list or tuple of 4 finite numbers as they are (no text, no booleans): what COCOeval
    can score as written."""
    return (isinstance(bbox, (list, tuple)) and len(bbox) == 4
            and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in bbox))


def large_enough(width: Any, height: Any) -> Any:
    """Whether a box of ``width`` x ``height`` px is kept: both at least :data:`MIN_BOX_SIZE`. Floats give a bool,
    numpy arrays an elementwise mask."""
    return (width >= MIN_BOX_SIZE) & (height >= MIN_BOX_SIZE)


@dataclass(frozen=True)
class BoxVerdict:
    """What training does with one box.

    ``code``: None when it is kept, else why it is dropped: ``box_invalid`` (not 4 finite numbers),
    ``box_nonpositive`` (width or height <= 0), ``box_outside`` (nothing inside the image) or ``box_degenerate``
    (under :data:`MIN_BOX_SIZE` px once clipped). ``xyxy``: the box clipped to its image, ``[x1, y1, x2, y2]``
    pixels (None for invalid and non-positive boxes). ``clipped``: clipping changed the box.
    """

    code: Optional[str]
    xyxy: Optional[Box] = None
    clipped: bool = False

    @property
    def kept(self) -> bool:
        return self.code is None


def clip_box(x: float, y: float, w: float, h: float, width: float, height: float) -> BoxVerdict:
    """Clip a box ``[x, y, w, h]`` (pixels, ``w`` and ``h`` > 0) to a ``width`` x ``height`` image; drop it when
    nothing or less than :data:`MIN_BOX_SIZE` px of a side stays inside."""
    x1, y1, x2, y2 = max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)
    clipped = (x1, y1, x2, y2) != (x, y, x + w, y + h)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return BoxVerdict("box_outside", (x1, y1, x2, y2), clipped)
    if not large_enough(x2 - x1, y2 - y1):
        return BoxVerdict("box_degenerate", (x1, y1, x2, y2), clipped)
    return BoxVerdict(None, (x1, y1, x2, y2), clipped)


def training_box(bbox: Any, width: float, height: float) -> BoxVerdict:
    """What training does with a COCO ``bbox`` ``[x, y, w, h]`` (pixels, read as written: no xyxy or
    normalised-coordinate guessing, that is ``--fix``'s job) in a ``width`` x ``height`` image."""
    parsed = parse_bbox(bbox)
    if parsed is None:
        return BoxVerdict("box_invalid")
    x, y, w, h = parsed
    if w <= 0 or h <= 0:
        return BoxVerdict("box_nonpositive")
    return clip_box(x, y, w, h, width, height)


def looks_normalized(annotations: Sequence[dict[str, Any]], sizes: dict[Any, tuple[float, float]]) -> bool:
    """All boxes within 0..1 while their images are larger than 2 px: normalised coordinates."""
    boxes = [(parse_bbox(a.get("bbox")), sizes.get(a.get("image_id"))) for a in annotations]
    boxes = [(b, s) for b, s in boxes if b is not None and s is not None]
    if len(boxes) < 1:
        return False
    return all(max(b) <= 1.0 + 1e-6 and min(b) >= 0 and max(s) > 2 for b, s in boxes)


def fits_as_xyxy(x: float, y: float, w: float, h: float, width: float, height: float) -> bool:
    """Whether the four numbers of a bbox make a box inside the image when read as ``[x1, y1, x2, y2]``."""
    tol = BORDER_TOLERANCE
    return w > x and h > y and x >= -tol and y >= -tol and w <= width + tol and h <= height + tol


def file_written_as_xyxy(boxes: Sequence[tuple[Any, float, float]]) -> tuple[bool, int]:
    """The whole-file verdict on ``(bbox, image width, image height)`` of every box of a file:
    ``(written as [x1, y1, x2, y2], how many boxes overflow their image as [x, y, w, h] but fit as xyxy)``.

    xyxy when at least half of the overflowing boxes, and at least half of all boxes, fit as xyxy. Then every
    box of the file is xyxy, also those that happen to fit when read as [x, y, w, h].
    """
    overflowing = fit_xyxy = 0
    for bbox, width, height in boxes:
        parsed = parse_bbox(bbox)
        if parsed is None:
            continue
        x, y, w, h = parsed
        if x + w > width + BORDER_TOLERANCE or y + h > height + BORDER_TOLERANCE:
            overflowing += 1
            fit_xyxy += fits_as_xyxy(x, y, w, h, width, height)
    verdict = bool(overflowing) and fit_xyxy >= max(1, 0.5 * overflowing) and fit_xyxy >= 0.5 * max(1, len(boxes))
    return verdict, fit_xyxy


def box_verdict(bbox: Any, width: float, height: float, normalized: bool, xyxy_file: bool = False
                ) -> tuple[Optional[str], Optional[list[float]], str]:
    """The checker's and ``--fix``'s verdict on one annotation's bbox: ``(code or None, repaired [x, y, w, h] box
    or None when it must go, message)``.

    ``bbox`` is COCO ``[x, y, w, h]`` in pixels (in 0..1 when ``normalized``); with ``xyxy_file`` (the whole-file
    verdict of :func:`file_written_as_xyxy`) it is read as ``[x1, y1, x2, y2]``, whether or not it would fit as
    ``[x, y, w, h]``. The repaired box is ``[x, y, w, h]`` pixels, clipped to the image as training clips it
    (:func:`clip_box`).
    """
    parsed = parse_bbox(bbox)
    if parsed is None:
        return "box_invalid", None, f"bbox {bbox!r} is not 4 finite numbers"
    x, y, w, h = parsed
    if normalized:
        x, y, w, h = x * width, y * height, w * width, h * height
    code: Optional[str] = None
    message = ""
    if xyxy_file:
        code = "box_xyxy"
        message = f"bbox {list(parsed)} read as [x1, y1, x2, y2]: the file is written in xyxy"
        w, h = w - x, h - y
    if w <= 0 or h <= 0:
        return "box_nonpositive", None, f"bbox {list(parsed)} has width {w:g} / height {h:g} <= 0"
    tol = BORDER_TOLERANCE
    overflow = x + w > width + tol or y + h > height + tol
    if code is None and overflow and fits_as_xyxy(x, y, w, h, width, height):
        code = "box_xyxy"
        message = (f"bbox {list(parsed)}: x+w = {x + w:g} / y+h = {y + h:g} exceed the image ({width:g} x "
                   f"{height:g}) but as [x1, y1, x2, y2] it fits: written as xyxy?")
        w, h = w - x, h - y
    clipped = clip_box(x, y, w, h, width, height)
    x1, y1, x2, y2 = clipped.xyxy  # type: ignore[misc]
    if clipped.code == "box_outside":
        return "box_outside", None, f"bbox {list(parsed)} lies outside the image ({width:g} x {height:g})"
    if clipped.code == "box_degenerate":
        return "box_degenerate", None, (f"bbox {list(parsed)} is {x2 - x1:.2g} x {y2 - y1:.2g} px inside the "
                                        f"image: under {MIN_BOX_SIZE:g} px, training drops it")
    crosses = x < -tol or y < -tol or x + w > width + tol or y + h > height + tol
    if code is None and crosses:
        code = "box_clipped"
        message = f"bbox {list(parsed)} crosses the border of the {width:g} x {height:g} image"
    repaired = [x1, y1, x2 - x1, y2 - y1] if (crosses or code == "box_xyxy" or normalized) else list(parsed)
    return code, repaired, message


BOX_SEVERITY = {"box_invalid": "error", "box_nonpositive": "error", "box_outside": "error",
                "box_degenerate": "error", "box_xyxy": "error", "box_clipped": "warning"}
