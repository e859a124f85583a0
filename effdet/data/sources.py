"""Where images come from: files, folders, globs and videos (for ``tools/infer.py`` and the Predictor), and
image folders without annotations as a letterboxed Dataset (for test-dev style evaluation)."""
from __future__ import annotations

import glob
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np
from torch.utils.data import Dataset

from .collate import collate_detection, limit_opencv_threads
from .preprocess import ImageReadError, image_to_tensor, letterbox, load_image
from ..types import PathLike

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")


@dataclass
class Inputs:
    """Expanded sources: image candidates and videos in order, and sources that were not found."""

    images: list[Path] = field(default_factory=list)
    videos: list[Path] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)


def _is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def expand_sources(sources: Sequence[str]) -> Inputs:
    """Files, folders (their regular, non-hidden files, sorted) and globs -> image and video paths.

    Any file that is not a video is an image candidate: reading it decides (and reports) the rest.
    """
    found = Inputs()
    seen: set[Path] = set()

    def add(path: Path) -> None:
        key = path.resolve()
        if key in seen:
            return
        seen.add(key)
        (found.videos if path.suffix.lower() in VIDEO_EXTENSIONS else found.images).append(path)

    for source in sources:
        path = Path(source)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.is_file() and not child.name.startswith("."):
                    add(child)
        elif path.is_file():
            add(path)
        elif _is_glob(source):
            matches = sorted(Path(p) for p in glob.glob(source, recursive=True) if Path(p).is_file())
            if not matches:
                found.not_found.append(source)
            for match in matches:
                add(match)
        else:
            found.not_found.append(source)
    return found


class VideoSource:
    """Frames of a video file (BGR ``H x W x 3`` uint8), read in batches; ``opened`` is False when OpenCV
    cannot open the file. Use as a context manager (releases the capture)."""

    def __init__(self, path: PathLike) -> None:
        import cv2

        self.path = Path(path)
        self.capture = cv2.VideoCapture(str(path))
        self.opened = bool(self.capture.isOpened())
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS) or 25.0) if self.opened else 25.0

    def read(self, count: int) -> list[np.ndarray]:
        """Up to ``count`` next frames (fewer at the end of the video, none after it)."""
        frames = []
        while len(frames) < count:
            ok, frame = self.capture.read()
            if not ok:
                break
            frames.append(frame)
        return frames

    def close(self) -> None:
        self.capture.release()

    def __enter__(self) -> "VideoSource":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def list_image_files(folder: PathLike) -> list[Path]:
    """Image files (by extension, see :data:`IMAGE_EXTENSIONS`) directly in ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder '{folder}' does not exist")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


class ImageFileDataset(Dataset):
    """Image files with ids, letterboxed like validation, for a DataLoader with :func:`collate_image_files`.

    Items are the samples of :class:`effdet.data.CocoDetection` (no objects), or
    ``{"image_id", "path", "error"}`` when a file cannot be read (reported, not raised). With ``source_images`` the
    image is not letterboxed: ``H x W x 3`` RGB numpy as read (for sliced inference; collate with
    ``collate_image_files(samples, collate=collate_source_images)``).
    """

    def __init__(self, items: Sequence[tuple[int, PathLike]], image_size: Sequence[int], fill: Sequence[int],
                 exif_orientation: str = "apply") -> None:
        self.items = [(int(i), Path(p)) for i, p in items]
        self.exif_orientation = exif_orientation  # load_image's: "apply" (as displayed) or "ignore"
        self.image_size = [int(s) for s in image_size]
        self.fill = tuple(int(v) for v in fill)
        self.source_images = False
        limit_opencv_threads()  # in the parent, before DataLoader workers fork

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_id, path = self.items[index]
        try:
            image = load_image(path, self.exif_orientation)
        except ImageReadError as error:
            return {"image_id": image_id, "path": str(path), "error": error.reason}
        empty = np.zeros((0, 4), np.float32)
        if self.source_images:
            return {"image": image, "boxes": empty, "labels": np.zeros((0,), np.int64), "crowd_boxes": empty,
                    "image_id": image_id, "orig_size": tuple(image.shape[:2]), "scale": 1.0, "path": str(path)}
        canvas, scale = letterbox(image, self.image_size, self.fill)
        return {"image": image_to_tensor(canvas), "boxes": empty, "labels": np.zeros((0,), np.int64),
                "crowd_boxes": empty, "image_id": image_id, "orig_size": tuple(image.shape[:2]), "scale": scale,
                "path": str(path)}


def collate_image_files(samples: Sequence[dict[str, Any]], collate: Any = None) -> dict[str, Any]:
    """Batch :class:`ImageFileDataset` items: ``collate`` (default ``collate_detection``) of the readable ones
    (``None`` if there are none) under ``"batch"``, their ``"paths"``, and ``"failed"``: ``[(path, reason), ...]``."""
    good = [s for s in samples if "error" not in s]
    return {
        "batch": (collate or collate_detection)(good) if good else None,
        "paths": [s["path"] for s in good],
        "failed": [(s["path"], s["error"]) for s in samples if "error" in s],
    }


def iter_batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive lists of ``size`` items (the last may be shorter)."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def image_items(images: PathLike, image_info: Optional[PathLike] = None,
                allow_outside_images: bool = False) -> tuple[list[tuple[int, Path]], bool]:
    """``(image id, path)`` pairs of a folder for test-dev style detection, and whether the ids came from
    ``image_info`` (a COCO JSON whose ``images`` give ids and file names) rather than the sorted file order.

    ``file_name`` values become paths by the dataset's rule (:func:`effdet.data.checks.resolve_image_path`):
    absolute names or names leaving ``images`` raise ``ValueError`` unless ``allow_outside_images``."""
    from .checks import PathOutsideImagesError, resolve_image_path

    images = Path(images)
    if image_info:
        with open(image_info, encoding="utf-8") as handle:
            info = json.load(handle)
        entries = info.get("images") if isinstance(info, dict) else None
        if not isinstance(entries, list):
            raise ValueError(f"--image-info '{image_info}' has no 'images' list")
        items = []
        for entry in entries:
            try:
                items.append((int(entry["id"]), resolve_image_path(images, entry["file_name"], allow_outside_images)))
            except PathOutsideImagesError as error:
                raise ValueError(f"--image-info '{image_info}': image id {entry['id']}: {error}") from None
        return items, True
    return [(index + 1, path) for index, path in enumerate(list_image_files(images))], False


__all__ = [
    "IMAGE_EXTENSIONS", "ImageFileDataset", "Inputs", "VIDEO_EXTENSIONS", "VideoSource", "collate_image_files",
    "expand_sources", "image_items", "iter_batches", "list_image_files",
]
