"""Image pre-processing shared by training, inference and export.

Conventions
-----------
* Images on the host are ``numpy`` arrays ``H x W x 3``, ``uint8``, **RGB**. OpenCV decodes BGR; the
  conversion to RGB happens once, in :func:`load_image` / :func:`to_rgb`.
* Images travel through data loaders as ``uint8`` tensors ``[B, 3, H, W]`` (4x less memory and IPC than
  float32). :func:`normalize` turns them into the float32 tensors the raw ``EfficientDet`` module takes;
  it is the only place in the framework that normalises.
* Mean and std are in 0..255 pixel units. D-models use ImageNet statistics; Lite models use the
  official TF-Lite convention, mean 127 and std 128.
* :func:`letterbox` resizes keeping the aspect ratio, places the image at the TOP-LEFT corner and pads
  right/bottom. A box in letterboxed pixels maps back to the original image as ``box / scale``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

from typing import TYPE_CHECKING

import numpy as np

from ..types import PathLike

if TYPE_CHECKING:  # torch is imported where it is used, so the torch-free runtime (effdet.runtime) can use
    import torch  # letterbox / load_image / to_rgb from here

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "LITE_MEAN",
    "LITE_STD",
    "ImageReadError",
    "apply_exif_orientation",
    "fill_from_mean",
    "image_to_tensor",
    "letterbox",
    "letterbox_batch",
    "letterbox_scale",
    "load_image",
    "normalize",
    "normalize_to_chw",
    "resize_interpolation",
    "to_rgb",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD: tuple[float, float, float] = (0.229 * 255, 0.224 * 255, 0.225 * 255)
LITE_MEAN: tuple[float, float, float] = (127.0, 127.0, 127.0)
LITE_STD: tuple[float, float, float] = (128.0, 128.0, 128.0)

SizeLike = Union[int, Sequence[int]]

# Any shrink uses INTER_AREA, which averages the source pixels each output pixel covers; INTER_LINEAR samples 4
# of them and aliases thin structures (strokes, edges) at every factor under 1. Training and inference share this
# rule. Measured on the similar-digits set (docs/convergence.md): aliased shrinking below 1x (the old rule switched
# at 0.5x) cost over a third of the final val AP (0.189 vs 0.302 after 16 epochs). PIL's resize, which the reference
# effdet uses, also filters when it shrinks.
AREA_INTERPOLATION_BELOW = 1.0


class ImageReadError(OSError):
    """An image file is missing, unreadable, corrupt or not an image.

    Attributes:
        path: the file (as given).
        reason: what went wrong, in words.
    """

    def __init__(self, path: PathLike, reason: str = "unreadable") -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"cannot read image '{self.path}': {reason}. Check that the file exists and is a complete "
            f"JPEG/PNG/BMP/TIFF/WebP image (re-export or re-download it), or remove its entry from the "
            f"annotations."
        )

    def __reduce__(self):  # keep (path, reason) through pickling (DataLoader workers)
        return (type(self), (self.path, self.reason))


def as_size(size: SizeLike) -> tuple[int, int]:
    """``int`` or ``(h, w)`` -> ``(h, w)`` of positive ints."""
    if isinstance(size, (int, np.integer)):
        height = width = int(size)
    else:
        height, width = (int(v) for v in size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {size!r}")
    return height, width


def fill_from_mean(mean: Sequence[float] = IMAGENET_MEAN) -> tuple[int, int, int]:
    """Padding colour (RGB uint8) that normalises to ~0: the rounded mean."""
    return tuple(int(round(float(v))) for v in mean)  # type: ignore[return-value]


def _stats_tensor(values: Union[float, Sequence[float], torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    import torch

    stats = torch.as_tensor(values, dtype=torch.float32, device=like.device)
    if stats.ndim == 0:
        return stats
    if stats.numel() != like.shape[-3]:
        raise ValueError(f"expected {like.shape[-3]} channel statistics, got {stats.numel()}")
    return stats.reshape(-1, 1, 1)


def normalize(
    images: torch.Tensor,
    mean: Union[float, Sequence[float], torch.Tensor] = IMAGENET_MEAN,
    std: Union[float, Sequence[float], torch.Tensor] = IMAGENET_STD,
) -> torch.Tensor:
    """``(images - mean) / std`` as float32 on the images' device.

    Args:
        images: ``[B, 3, H, W]`` or ``[3, H, W]``, uint8 or float, RGB in 0..255 pixel units.
        mean, std: per-channel (RGB) statistics in 0..255 units, or a scalar.

    Returns:
        float32 tensor of the same shape.
    """
    import torch

    if images.ndim not in (3, 4):
        raise ValueError(f"normalize expects [B,3,H,W] or [3,H,W], got shape {tuple(images.shape)}")
    mean_t = _stats_tensor(mean, images)
    std_t = _stats_tensor(std, images)
    return (images.to(torch.float32) - mean_t) / std_t


def normalize_to_chw(
    images: Sequence[np.ndarray], mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
    """numpy twin of :func:`normalize` for the torch-free runtime: same-size ``H x W x 3`` uint8 images ->
    float32 ``[B, 3, H, W]`` of ``(x - mean) / std``.

    Each channel plane is written in place as ``x * (1/std) + (-mean/std)`` (float32), which is about 40x faster
    than broadcasting over the trailing 3-channel axis and transposing afterwards (0.4 vs 17 ms at 512 x 512 on
    this project's 2-core machine; the two agree within 3e-7).
    """
    import cv2  # imported where used: `import effdet` does not load OpenCV

    height, width = images[0].shape[:2]
    inverse = 1.0 / np.asarray(std, np.float32)
    offset = -np.asarray(mean, np.float32) * inverse
    batch = np.empty((len(images), 3, height, width), np.float32)
    for index, image in enumerate(images):
        for channel, plane in enumerate(cv2.split(image)):
            np.multiply(plane, inverse[channel], out=batch[index, channel], casting="unsafe")
            batch[index, channel] += offset[channel]
    return batch


def resize_interpolation(scale: float) -> int:
    """OpenCV interpolation for a resize by ``scale``: INTER_AREA when shrinking, INTER_LINEAR when enlarging."""
    import cv2  # imported where used: `import effdet` does not load OpenCV

    return cv2.INTER_AREA if scale < AREA_INTERPOLATION_BELOW else cv2.INTER_LINEAR


def letterbox_scale(height: float, width: float, size: SizeLike) -> float:
    """Output pixels per source pixel when :func:`letterbox` fits an image of ``height x width`` px into ``size``
    (``S`` or ``(S_h, S_w)``): ``min(S_h / height, S_w / width)``; above 1 it enlarges."""
    out_h, out_w = as_size(size)
    return min(out_h / float(height), out_w / float(width))


def letterbox(
    image: np.ndarray,
    size: SizeLike,
    fill: Union[int, Sequence[int], None] = None,
) -> tuple[np.ndarray, float]:
    """Fit ``image`` inside ``size`` keeping its aspect ratio; pad right/bottom.

    Args:
        image: ``H x W x 3`` uint8 (any channel order; it is not changed).
        size: output side ``S`` or ``(S_h, S_w)``.
        fill: padding colour; default the ImageNet mean colour (pads normalise to ~0).

    Returns:
        ``(canvas, scale)``: canvas ``S_h x S_w x 3`` uint8 with the resized image at the top-left;
        ``scale = min(S_h / H, S_w / W)`` output pixels per input pixel, so input-pixel boxes map
        to ``box * scale`` and back with ``box / scale``. Shrinking uses INTER_AREA (no aliasing),
        enlarging INTER_LINEAR.
    """
    import cv2  # imported where used: `import effdet` does not load OpenCV

    out_h, out_w = as_size(size)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"letterbox expects an H x W x 3 image, got shape {image.shape}")
    in_h, in_w = image.shape[:2]
    scale = letterbox_scale(in_h, in_w, (out_h, out_w))
    new_h = min(out_h, max(1, int(round(in_h * scale))))
    new_w = min(out_w, max(1, int(round(in_w * scale))))
    fill_value = fill_from_mean() if fill is None else fill
    if isinstance(fill_value, (int, np.integer)):
        fill_value = (int(fill_value),) * 3
    if (in_h, in_w) == (new_h, new_w):
        resized = image
    else:
        resized = cv2.resize(image, (new_w, new_h), interpolation=resize_interpolation(scale))
    canvas = cv2.copyMakeBorder(
        resized, 0, out_h - new_h, 0, out_w - new_w, cv2.BORDER_CONSTANT, value=tuple(fill_value)
    )
    return canvas, float(scale)


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 array -> contiguous uint8 tensor ``[3, H, W]``."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def letterbox_batch(rgb_images: Sequence[np.ndarray], size: SizeLike, fill: Sequence[int]
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """RGB uint8 ``H x W x 3`` images -> ``(images uint8 [B, 3, S_h, S_w], scales float32 [B], orig_sizes int64 [B, 2])``,
    each :func:`letterbox`-ed as validation does (top-left, ``fill`` padding): the batch ``detect_batch`` takes."""
    import torch

    canvases, scales, sizes = [], [], []
    for image in rgb_images:
        canvas, scale = letterbox(image, size, fill)
        canvases.append(image_to_tensor(canvas))
        scales.append(scale)
        sizes.append(image.shape[:2])
    return (torch.stack(canvases), torch.tensor(scales, dtype=torch.float32),
            torch.tensor(sizes, dtype=torch.int64).reshape(-1, 2))


def to_rgb(image: np.ndarray, bgr: bool) -> np.ndarray:
    """Bring a user-supplied numpy image to ``H x W x 3`` uint8 RGB.

    Args:
        image: ``H x W`` (grayscale), ``H x W x 1``, ``H x W x 3`` or ``H x W x 4`` (alpha is dropped);
            uint8, uint16 (scaled by 1/257 to 0..255) or float (0..1 if its maximum is <= 1, else 0..255).
        bgr: True if the colour channels are in OpenCV's BGR(A) order, False if already RGB(A).

    Returns:
        ``H x W x 3`` uint8 RGB, contiguous (a new array unless the input already was exactly that).
    """
    import cv2  # imported where used: `import effdet` does not load OpenCV

    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"expected an H x W, H x W x 3 or H x W x 4 image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image has no pixels (shape {image.shape})")
    image = _to_uint8(image)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if bgr else cv2.COLOR_RGBA2RGB)
    if bgr:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    import cv2  # imported where used: `import effdet` does not load OpenCV

    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return cv2.convertScaleAbs(image, alpha=1.0 / 257.0)
    if np.issubdtype(image.dtype, np.floating):
        scaled = image.astype(np.float32)
        if np.nanmax(scaled) <= 1.0:
            scaled = scaled * 255.0
        return np.clip(np.nan_to_num(scaled), 0, 255).round().astype(np.uint8)
    raise ValueError(f"unsupported pixel type {image.dtype} (expected uint8, uint16 or float)")


def _jpeg_is_truncated(data: bytes) -> bool:
    """True if a JPEG stream ends before its end-of-image marker.

    Walks the header segments up to the first start-of-scan, then looks for the EOI marker (FF D9),
    which cannot occur inside entropy-coded data (FF bytes there are stuffed with 00). Embedded EXIF
    thumbnails sit inside header segments and are skipped; data appended after EOI (motion photos) is
    fine. Some OpenCV/libjpeg versions return a grey-filled image for truncated files instead of failing.
    """
    position = 2
    size = len(data)
    while position + 4 <= size:
        if data[position] != 0xFF:
            return False  # unexpected layout: let the decoder judge
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker == 0xD9:
            return False
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length field
            position += 2
            continue
        segment_length = (data[position + 2] << 8) | data[position + 3]
        if marker == 0xDA:  # start of scan: compressed data follows
            return data.find(b"\xff\xd9", position + 2 + segment_length) < 0
        position += 2 + segment_length
    return True


def _check_pixel_limit(data: bytes, name: str):
    """Decompression-bomb guard (``effdet.imageinfo``): refuse, from the header, images above the pixel limit.
    Returns the header (None when Pillow cannot read it)."""
    from ..imageinfo import ImageTooLargeError, check_pixel_limit

    try:
        return check_pixel_limit(data, name)
    except ImageTooLargeError as error:
        raise ImageReadError(name, error.reason) from None  # type: ignore[attr-defined]


def apply_exif_orientation(image: np.ndarray, orientation: Optional[int]) -> np.ndarray:
    """The stored pixels ``image`` (``H x W [x C]``) as a viewer shows them for an EXIF ``orientation`` (1-8; None or
    any other value: as stored), the transposition of Pillow's ``ImageOps.exif_transpose`` and OpenCV's default
    reading. Orientations 5-8 swap height and width."""
    if orientation == 2:
        image = image[:, ::-1]  # mirrored left-right
    elif orientation == 3:
        image = image[::-1, ::-1]  # rotated 180°
    elif orientation == 4:
        image = image[::-1]  # mirrored top-bottom
    elif orientation == 5:
        image = image.swapaxes(0, 1)  # transposed (mirrored along the main diagonal)
    elif orientation == 6:
        image = np.rot90(image, -1)  # rotated 90° clockwise
    elif orientation == 7:
        image = image[::-1, ::-1].swapaxes(0, 1)  # transversed (mirrored along the other diagonal)
    elif orientation == 8:
        image = np.rot90(image, 1)  # rotated 90° counter-clockwise
    else:
        return image
    return np.ascontiguousarray(image)


def load_image(path: Union[PathLike, bytes], exif_orientation: str = "apply") -> np.ndarray:
    """Read an image file (or encoded bytes) as ``H x W x 3`` uint8 RGB.

    Grayscale becomes 3 channels, alpha is dropped, 16-bit is scaled to 8-bit (``/257``), BGR becomes
    RGB. ``exif_orientation`` (config ``data.exif_orientation``): ``"apply"`` (default) turns the pixels by the
    EXIF orientation tag, so the image is used as displayed, as annotation tools and ``cv2.imread`` show it
    (its size is ``effdet.imageinfo.ImageHeader.size("apply")``); ``"ignore"`` keeps the stored pixel order,
    for data annotated on the stored pixels.

    Raises:
        ImageReadError: missing file, a folder, empty, truncated JPEG, more pixels than
            ``effdet.imageinfo.max_image_pixels()`` (checked from the header, before decoding), or anything
            OpenCV cannot decode.
        ValueError: ``exif_orientation`` is not ``"apply"`` or ``"ignore"``.
    """
    import cv2  # imported where used: `import effdet` does not load OpenCV

    from ..imageinfo import check_exif_orientation_mode

    check_exif_orientation_mode(exif_orientation)
    if isinstance(path, (bytes, bytearray, memoryview)):
        data, name = bytes(path), "<bytes>"
    else:
        name = os.fspath(path)
        file_path = Path(name)
        if not file_path.exists():
            raise ImageReadError(name, "file does not exist")
        if not file_path.is_file():
            raise ImageReadError(name, "not a regular file")
        try:
            data = file_path.read_bytes()
        except OSError as error:
            raise ImageReadError(name, f"cannot open the file ({error.strerror or error})") from error
    if not data:
        raise ImageReadError(name, "file is empty")
    header = _check_pixel_limit(data, name)
    if data[:2] == b"\xff\xd8" and _jpeg_is_truncated(data):
        raise ImageReadError(name, "JPEG data is truncated (no end-of-image marker)")
    # IMREAD_UNCHANGED keeps 16 bits and alpha, and never applies the EXIF orientation: it is applied below from
    # the header Pillow read, the same one ImageHeader.size() answers from.
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageReadError(name, "OpenCV cannot decode it (corrupt, truncated or not an image format)")
    try:
        image = to_rgb(decoded, bgr=True)
    except (TypeError, ValueError) as error:
        raise ImageReadError(name, str(error)) from error
    if exif_orientation == "apply" and header is not None:
        image = apply_exif_orientation(image, header.exif_orientation)
    return image
