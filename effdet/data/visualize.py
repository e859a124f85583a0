"""Drawing boxes and their names on images (OpenCV), and the optional ``--show`` window.

Images are ``H x W x 3`` uint8 numpy arrays; the functions do not care about the channel order except
for the colours, which are given in the image's own order (RGB for images from
:func:`effdet.data.preprocess.load_image`). Boxes are absolute pixel ``xyxy`` in the image's pixels.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional, Sequence, Union

import cv2
import numpy as np

__all__ = ["PALETTE", "Display", "color_for", "draw_boxes", "draw_detections", "side_by_side"]

Color = tuple[int, int, int]

# Distinct, saturated colours (RGB); class i uses PALETTE[i % len(PALETTE)].
PALETTE: tuple[Color, ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
)


def color_for(index: int) -> Color:
    """The palette colour of class ``index``."""
    return PALETTE[int(index) % len(PALETTE)]


def drawing_sizes(height: int, width: int) -> tuple[int, float, int]:
    """``(line width px, font scale, text stroke px)`` for drawing on a ``height x width`` image: all grow with its
    longer side, so that boxes and captions stay readable on large (aerial, 2,000+ px) images once the picture is
    shown scaled down to a screen: line ``side / 300`` (at least 1), font scale ``side / 1200`` (at least 0.35),
    stroke ``1.2 x`` the font scale (at least 1; OpenCV's 1 px stroke vanishes at large scales)."""
    side = max(int(height), int(width))
    font_scale = max(0.35, side / 1200)
    return max(1, int(round(side / 300))), font_scale, max(1, int(round(1.2 * font_scale)))


def draw_boxes(
    image: np.ndarray,
    boxes_xyxy: Union[np.ndarray, Sequence[Sequence[float]]],
    names: Optional[Sequence[str]] = None,
    scores: Optional[Sequence[float]] = None,
    color: Union[Color, Sequence[Color], None] = None,
    labels: Optional[Sequence[int]] = None,
    thickness: Optional[int] = None,
    dashed: bool = False,
) -> np.ndarray:
    """Return a copy of ``image`` with each box outlined and captioned.

    Args:
        image: ``H x W x 3`` uint8.
        boxes_xyxy: ``[N, 4]`` absolute pixel ``x1, y1, x2, y2``.
        names: caption text per box (e.g. the class name); None draws no text.
        scores: per box, appended to the caption as ``name 0.87``.
        color: one colour for all boxes, one per box, or None: the palette colour of ``labels[i]``
            (or of the box index when ``labels`` is None).
        labels: class index per box, used for palette colours.
        thickness: line width in pixels (default: scaled with the image size).
        dashed: draw dashed outlines (to tell e.g. ground truth from predictions in one picture).
    """
    canvas = np.ascontiguousarray(image.copy())
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    height, width = canvas.shape[:2]
    line, font_scale, stroke = drawing_sizes(height, width)
    line = thickness or line
    for index, box in enumerate(boxes):
        if not np.all(np.isfinite(box)):
            continue
        if color is None:
            colour = color_for(labels[index] if labels is not None else index)
        elif isinstance(color[0], (int, np.integer)):
            colour = tuple(int(c) for c in color)  # type: ignore[arg-type]
        else:
            colour = tuple(int(c) for c in color[index])  # type: ignore[index]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        if dashed:
            _dashed_rectangle(canvas, (x1, y1), (x2, y2), colour, line)
        else:
            cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, line, cv2.LINE_AA)
        caption = names[index] if names is not None else ""
        if scores is not None:
            caption = f"{caption} {float(scores[index]):.2f}".strip()
        if caption:
            _caption(canvas, caption, x1, y1, colour, font_scale, stroke)
    return canvas


def _dashed_rectangle(canvas: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], colour: Color, line: int) -> None:
    (x1, y1), (x2, y2) = p1, p2
    dash = max(3, 3 * line)
    for start in range(min(x1, x2), max(x1, x2), 2 * dash):
        end = min(start + dash, max(x1, x2))
        cv2.line(canvas, (start, y1), (end, y1), colour, line)
        cv2.line(canvas, (start, y2), (end, y2), colour, line)
    for start in range(min(y1, y2), max(y1, y2), 2 * dash):
        end = min(start + dash, max(y1, y2))
        cv2.line(canvas, (x1, start), (x1, end), colour, line)
        cv2.line(canvas, (x2, start), (x2, end), colour, line)


def _caption(canvas: np.ndarray, text: str, x: int, y: int, colour: Color, font_scale: float,
             stroke: int = 1) -> None:
    """Text on a filled box of the box colour, above the box (inside it when there is no room)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (text_w, text_h), baseline = cv2.getTextSize(text, font, font_scale, stroke)
    top = y - text_h - baseline - 2
    if top < 0:
        top = y
    x = max(0, min(x, canvas.shape[1] - text_w - 2))
    cv2.rectangle(canvas, (x, top), (x + text_w + 2, top + text_h + baseline + 2), colour, -1)
    brightness = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    ink = (0, 0, 0) if brightness > 140 else (255, 255, 255)
    cv2.putText(canvas, text, (x + 1, top + text_h + 1), font, font_scale, ink, stroke, cv2.LINE_AA)


def side_by_side(images: Sequence[np.ndarray], titles: Optional[Sequence[str]] = None, height: int = 384,
                 gap: int = 8, background: Color = (255, 255, 255)) -> np.ndarray:
    """Panels resized to the same ``height`` (aspect kept), left to right, with optional titles above."""
    panels = []
    title_h = 22 if titles else 0
    for index, image in enumerate(images):
        scale = height / image.shape[0]
        resized = cv2.resize(image, (max(1, int(round(image.shape[1] * scale))), height),
                             interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        panel = np.full((height + title_h, resized.shape[1], 3), background, np.uint8)
        panel[title_h:] = resized
        if titles:
            cv2.putText(panel, str(titles[index]), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(panel)
        panels.append(np.full((height + title_h, gap, 3), background, np.uint8))
    return np.concatenate(panels[:-1], axis=1)


def draw_detections(image: np.ndarray, detections: dict[str, Any]) -> np.ndarray:
    """A copy of ``image`` with a Predictor result drawn: ``boxes`` xyxy pixels, ``names``, ``scores`` and
    ``labels`` (palette colour per class), best-scoring drawn last (on top)."""
    order = np.argsort(np.asarray(detections["scores"], dtype=np.float64), kind="stable")
    return draw_boxes(image, np.asarray(detections["boxes"], dtype=np.float64).reshape(-1, 4)[order],
                      names=[detections["names"][i] for i in order],
                      scores=[float(detections["scores"][i]) for i in order],
                      labels=[int(detections["labels"][i]) for i in order])


class Display:
    """``--show``: an OpenCV window when a display (and OpenCV GUI support) exists; otherwise a no-op."""

    def __init__(self, wanted: bool) -> None:
        self.enabled = False
        if not wanted:
            return
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            print("--show ignored: no display (DISPLAY is not set)", file=sys.stderr)
            return
        try:
            cv2.namedWindow("effdet", cv2.WINDOW_NORMAL)
            self.enabled = True
        except cv2.error:
            print("--show ignored: this OpenCV build has no GUI support (opencv-python-headless?)", file=sys.stderr)

    def show(self, image_bgr: np.ndarray, wait_ms: int) -> bool:
        """Show a frame; False when the user pressed q or Esc."""
        if not self.enabled:
            return True
        cv2.imshow("effdet", image_bgr)
        return cv2.waitKey(wait_ms) & 0xFF not in (ord("q"), 27)

    def close(self) -> None:
        if self.enabled:
            cv2.destroyAllWindows()
