"""Image checks: the size an entry states, its path, whether the file exists and, at the ``headers`` and
``full`` levels, the file itself (real size as training loads it, EXIF orientation, pixel limit, decoding)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from .entries import image_size
from .findings import DataReport
from .paths import FolderListings, PathLike, PathOutsideImagesError, resolve_image_path


def check_images(report: DataReport, images_dir: PathLike, image_by_id: dict[Any, dict[str, Any]], level: str,
                 allow_outside: bool, max_pixels: Optional[int], exif_orientation: str
                 ) -> dict[Any, tuple[float, float]]:
    """Per image: size from the JSON, path, existence; with headers/full the real file (its size as loaded with
    ``exif_orientation``). Returns the ``image id -> (width, height)`` used to judge boxes (the JSON's; the real
    size where the JSON's is bad)."""
    from ...imageinfo import max_image_pixels, read_image_header

    limit = max_image_pixels() if max_pixels is None else int(max_pixels)
    listings = FolderListings()
    sizes: dict[Any, tuple[float, float]] = {}
    for image_id, entry in image_by_id.items():
        name = str(entry["file_name"])
        size = image_size(entry)
        if size is None:
            report.add("fatal", "bad_image_size", f"width/height {entry['width']!r} x {entry['height']!r} are not "
                       "numbers of at least 1 px", image_id=image_id, file=name)
        else:
            sizes[image_id] = size
        try:
            path = resolve_image_path(images_dir, name, allow_outside)
        except PathOutsideImagesError as error:
            report.add("fatal", "path_outside", str(error), image_id=image_id, file=name)
            continue
        listing = listings.names(path.parent)
        if listing is None or path.name not in listing:
            where = "" if listing is not None else f" (folder '{path.parent}' does not exist)"
            report.add("error", "missing_file", f"image file '{path}' not found{where}", image_id=image_id, file=name)
            continue
        if level == "fast":
            continue
        header = read_image_header(path)
        if header is None and level == "headers":
            report.add("error", "unreadable_image", "not an image file (Pillow does not recognise its header)",
                       image_id=image_id, file=name)
            continue
        if header is not None:
            if limit and header.pixels > limit:
                report.add("error", "image_too_large", f"{header.width} x {header.height} = {header.pixels:,} "
                           f"pixels, above the limit of {limit:,} (raise it with --max-image-pixels / "
                           f"EFFDET_MAX_IMAGE_PIXELS if you trust the file)", image_id=image_id, file=name)
                continue
            real_width, real_height = header.size(exif_orientation)
            if header.rotated:
                view = ("used as displayed" if exif_orientation == "apply" else "used as stored (viewers show it "
                        "rotated/mirrored)")
                other = "ignore" if exif_orientation == "apply" else "apply"
                report.add("warning", "exif_rotated", f"EXIF orientation {header.exif_orientation}: {view}, "
                           f"{real_width} x {real_height} (data.exif_orientation={exif_orientation}); check that "
                           f"the boxes were drawn on that view (data.exif_orientation={other} for the other)",
                           image_id=image_id, file=name)
            if size is not None and (real_width, real_height) != (int(size[0]), int(size[1])):
                turned = (f" (EXIF orientation {header.exif_orientation}; data.exif_orientation={exif_orientation})"
                          if header.rotated else "")
                report.add("error", "size_mismatch", f"the file is {real_width} x {real_height} (w x h){turned} "
                           f"but the JSON says {entry['width']} x {entry['height']}", image_id=image_id, file=name,
                           detail={"width": real_width, "height": real_height})
            elif size is None:
                sizes[image_id] = (float(real_width), float(real_height))
                report.set_detail(image_id, "bad_image_size", {"width": real_width, "height": real_height})
        if level == "full":
            decode(report, path, image_id, name, exif_orientation)
    return sizes


def decode(report: DataReport, path: Path, image_id: Any, name: str, exif_orientation: str) -> None:
    """Decode the whole image as training does; a failure is an ``unreadable_image`` or ``image_too_large`` error."""
    from ..preprocess import ImageReadError, load_image

    try:
        load_image(path, exif_orientation)
    except ImageReadError as error:
        code = "image_too_large" if "decompression-bomb" in error.reason else "unreadable_image"
        report.add("error", code, error.reason, image_id=image_id, file=name)
