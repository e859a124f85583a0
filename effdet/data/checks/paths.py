"""Path safety: the one rule by which an image ``file_name`` becomes a path, and one folder listing per folder to
learn which image files exist."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from ...types import PathLike



class PathOutsideImagesError(ValueError):
    """An image ``file_name`` resolves outside the images folder (absolute, or with ``..``)."""


def resolve_image_path(images_dir: PathLike, file_name: Any, allow_outside: bool = False,
                       folder: str = "images folder") -> Path:
    """``images_dir / file_name``, refusing names that leave the folder: the one rule by which a ``file_name``
    becomes a path (datasets, checks, importers, ``tools/eval.py --image-info``, the analysis gallery).

    Absolute names and names whose ``..`` parts resolve outside ``images_dir`` raise
    :class:`PathOutsideImagesError` unless ``allow_outside`` (config ``data.allow_outside_images``).
    Symbolic links inside the folder are followed as they are (only the name is judged). ``folder`` names
    the folder in the message (e.g. ``"labels folder"`` where label files are written).
    """
    name = str(file_name)
    root = Path(images_dir)
    candidate = Path(name)
    hint = "set data.allow_outside_images=true / --allow-outside-images to accept it" if folder == "images folder" \
        else "it is refused"
    if candidate.is_absolute() or candidate.drive:
        if allow_outside:
            return candidate
        raise PathOutsideImagesError(
            f"file_name '{name}' is an absolute path; file names must be relative to the {folder} "
            f"'{root}' ({hint})")
    joined = root / candidate
    if not allow_outside:
        base = os.path.normpath(os.path.abspath(root))
        target = os.path.normpath(os.path.abspath(joined))
        if os.path.commonpath([base, target]) != base:
            raise PathOutsideImagesError(
                f"file_name '{name}' leaves the {folder} '{root}' (it resolves to '{target}'); {hint}")
    return joined


class FolderListings:
    """Which files exist, by listing each folder once (one ``os.scandir`` per folder, not one ``stat`` per image:
    a million-image dataset on a network disk)."""

    def __init__(self) -> None:
        self._names: dict[Path, Optional[set[str]]] = {}

    def names(self, folder: Path) -> Optional[set[str]]:
        """Names of the files (not folders) in ``folder``; None when it cannot be listed (missing, no access)."""
        if folder not in self._names:
            try:
                self._names[folder] = {entry.name for entry in os.scandir(folder) if entry.is_file()}
            except OSError:
                self._names[folder] = None
        return self._names[folder]

    def has_file(self, path: Path) -> bool:
        """Whether ``path`` is an existing file, judged from its folder's listing."""
        names = self.names(path.parent)
        return names is not None and path.name in names
