"""Drawing detections on images (OpenCV), and the optional ``--show`` window."""
from __future__ import annotations

import os
import sys
from typing import Any

import cv2
import numpy as np


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct, saturated BGR colour per class (hues spaced by the golden ratio)."""
    hue = (label * 0.618033988749895 + 0.08) % 1.0
    value = 235 if label % 2 == 0 else 200
    hsv = np.array([[[int(hue * 180), 220, value]]], dtype=np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])  # type: ignore[return-value]


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    blue, green, red = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)


def draw_detections(image_bgr: np.ndarray, detections: dict[str, Any]) -> np.ndarray:
    """A copy of ``image_bgr`` with each box (xyxy pixels) drawn in its class colour and labelled
    ``name score`` on a filled tag; line width and font grow with the image size."""
    canvas = image_bgr.copy()
    height, width = canvas.shape[:2]
    thickness = max(1, int(round((height + width) / 600)))
    font_scale = max(0.4, (height + width) / 2200)
    font = cv2.FONT_HERSHEY_SIMPLEX
    order = np.argsort(detections["scores"])  # best drawn last (on top)
    for index in order:
        x1, y1, x2, y2 = (int(round(float(v))) for v in detections["boxes"][index])
        label = int(detections["labels"][index])
        colour = class_colour(label)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        text = f"{detections['names'][index]} {float(detections['scores'][index]):.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(text, font, font_scale, max(1, thickness - 1))
        top = y1 - text_h - baseline - 2
        if top < 0:  # no room above the box: put the tag inside it
            top = y1
        left = min(max(0, x1), max(0, width - text_w - 2))
        cv2.rectangle(canvas, (left, top), (left + text_w + 2, top + text_h + baseline + 2), colour, cv2.FILLED)
        cv2.putText(canvas, text, (left + 1, top + text_h + 1), font, font_scale, _text_colour(colour),
                    max(1, thickness - 1), cv2.LINE_AA)
    return canvas


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


__all__ = ["Display", "class_colour", "draw_detections"]
