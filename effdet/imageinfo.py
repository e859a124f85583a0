"""What an image file is, read from its header only (Pillow), and the decompression-bomb guard.

Reading the header costs tens of microseconds and never decodes pixels, so a 20000 x 20000 file (1.2 GB
once decoded) is refused before any decoder allocates memory for it.

EXIF orientation (``data.exif_orientation``, :data:`effdet.choices.EXIF_ORIENTATION_MODES`): ``apply`` (the default)
uses an image as displayed, as annotation tools and OpenCV's default reading show it: an orientation of 5-8 (a
quarter turn) swaps width and height (:meth:`ImageHeader.size`); ``ignore`` uses the stored pixels.

The pixel limit (width x height) is, in this order: :func:`set_max_image_pixels` in this process, the
environment variable ``EFFDET_MAX_IMAGE_PIXELS`` (inherited by DataLoader workers, also under ``spawn``),
or :data:`DEFAULT_MAX_IMAGE_PIXELS`. ``0`` disables the guard.
"""
from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Union

from .choices import EXIF_ORIENTATION_MODES

__all__ = [
    "DEFAULT_MAX_IMAGE_PIXELS",
    "EXIF_ORIENTATION_MODES",
    "ImageHeader",
    "ImageTooLargeError",
    "check_exif_orientation_mode",
    "check_pixel_limit",
    "exif_orientation_setting",
    "max_image_pixels",
    "read_image_header",
    "set_max_image_pixels",
]

# 179 million pixels (e.g. 13400 x 13400): Pillow's own decompression-bomb error threshold.
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970
ENV_MAX_IMAGE_PIXELS = "EFFDET_MAX_IMAGE_PIXELS"
EXIF_ORIENTATION_TAG = 0x0112
QUARTER_TURN_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations displayed with width and height swapped

_limit_override: Optional[int] = None


class ImageTooLargeError(ValueError):
    """An image has more pixels than the configured limit (a decompression-bomb guard)."""


@dataclass(frozen=True)
class ImageHeader:
    """Header facts: stored pixel size, Pillow format name, EXIF orientation (1 = upright, None = no tag)."""

    width: int
    height: int
    format: str
    exif_orientation: Optional[int] = None

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def rotated(self) -> bool:
        """True when a viewer that honours EXIF would show the image rotated or mirrored."""
        return self.exif_orientation not in (None, 1)

    @property
    def displayed_size(self) -> tuple[int, int]:
        """``(width, height)`` as a viewer that honours EXIF shows it (swapped for orientations 5-8)."""
        if self.exif_orientation in QUARTER_TURN_ORIENTATIONS:
            return self.height, self.width
        return self.width, self.height

    def size(self, exif_orientation: str = "apply") -> tuple[int, int]:
        """``(width, height)`` of the image as :func:`effdet.data.preprocess.load_image` gives it with that
        ``exif_orientation``: ``"apply"`` the displayed size, ``"ignore"`` the stored one."""
        if check_exif_orientation_mode(exif_orientation) == "apply":
            return self.displayed_size
        return self.width, self.height


def check_exif_orientation_mode(mode: Any, key: str = "exif_orientation") -> str:
    """``mode`` when it is one of :data:`EXIF_ORIENTATION_MODES`, else a ``ValueError`` naming ``key``."""
    if mode not in EXIF_ORIENTATION_MODES:
        raise ValueError(f"{key} is {mode!r}; valid choices: {list(EXIF_ORIENTATION_MODES)} (apply: use images as "
                         f"displayed, as annotation tools show them; ignore: the stored pixels)")
    return str(mode)


def exif_orientation_setting(train_config: Optional[Mapping[str, Any]]) -> str:
    """``data.exif_orientation`` of a training config (e.g. a checkpoint's); ``"apply"`` when it has none."""
    data = (train_config or {}).get("data") or {}
    return check_exif_orientation_mode(data.get("exif_orientation") or "apply", "data.exif_orientation")


def set_max_image_pixels(limit: Optional[int]) -> None:
    """Set the pixel limit for this process (None: back to the environment variable / default; 0: off).

    Also exported to ``EFFDET_MAX_IMAGE_PIXELS`` so that DataLoader workers started later inherit it.
    """
    global _limit_override
    if limit is None:
        _limit_override = None
        os.environ.pop(ENV_MAX_IMAGE_PIXELS, None)
        return
    if int(limit) < 0:
        raise ValueError(f"max_image_pixels must be >= 0 (0 disables the guard), got {limit}")
    _limit_override = int(limit)
    os.environ[ENV_MAX_IMAGE_PIXELS] = str(int(limit))


def max_image_pixels() -> int:
    """The current pixel limit (0 = no limit)."""
    if _limit_override is not None:
        return _limit_override
    value = os.environ.get(ENV_MAX_IMAGE_PIXELS)
    if value:
        try:
            return max(0, int(value))
        except ValueError:
            raise ValueError(f"environment variable {ENV_MAX_IMAGE_PIXELS}={value!r} is not an integer") from None
    return DEFAULT_MAX_IMAGE_PIXELS


def read_image_header(source: Union[str, os.PathLike, bytes]) -> Optional[ImageHeader]:
    """Size, format and EXIF orientation from the header of a file (or encoded bytes), or None if Pillow does
    not recognise it as an image. Never decodes pixel data."""
    from PIL import Image, UnidentifiedImageError

    stream = io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's own bomb warning: we apply our limit
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(stream) as image:
                    width, height = image.size
                    orientation = _exif_orientation(image)
                    return ImageHeader(int(width), int(height), str(image.format), orientation)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None


def _exif_orientation(image) -> Optional[int]:
    """EXIF orientation from header data only (``Image.getexif`` would decode a whole PNG to find it)."""
    from PIL import Image

    try:
        if image.format == "TIFF":
            value = image.tag_v2.get(EXIF_ORIENTATION_TAG)
        else:
            raw = image.info.get("exif")
            if not raw:
                return None
            exif = Image.Exif()
            exif.load(raw)
            value = exif.get(EXIF_ORIENTATION_TAG)
        return int(value) if value is not None else None
    except Exception:  # a damaged EXIF block is not a reason to refuse the image
        return None


def check_pixel_limit(source: Union[str, os.PathLike, bytes], name: Optional[str] = None,
                      limit: Optional[int] = None) -> Optional[ImageHeader]:
    """Raise :class:`ImageTooLargeError` naming the file when its header declares more pixels than the limit.

    Returns the header (None when Pillow cannot read it: the decoder then decides).
    """
    limit = max_image_pixels() if limit is None else int(limit)
    header = read_image_header(source)
    if header is not None and limit and header.pixels > limit:
        shown = name or (os.fspath(source) if not isinstance(source, (bytes, bytearray, memoryview)) else "<bytes>")
        reason = (
            f"it is {header.width} x {header.height} = {header.pixels:,} pixels, more than the limit of {limit:,} "
            f"(a decompression-bomb guard: decoding it would need {header.pixels * 3 / 2**30:.1f} GiB). Resize or "
            f"tile it, or raise the limit with {ENV_MAX_IMAGE_PIXELS}=N (config data.max_image_pixels; 0 = no "
            f"limit) if you trust the file"
        )
        error = ImageTooLargeError(f"image '{shown}': {reason}")
        error.reason = reason  # type: ignore[attr-defined]
        raise error
    return header
