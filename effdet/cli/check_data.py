"""Check a COCO-format dataset: one report of everything wrong or unusual, each item naming the file or id.

    python tools/check_data.py --images DIR --annotations JSON [--fix OUT.json] [--draw N --out DIR]
    effdet-check-data ...                                  (the same, as a console script)

Exit code: 0 when the data can train as it is, 1 when it cannot (fatal problems or errors: see the
report), 2 for usage errors. With --fix the exit code is that of the cleaned copy (0 when it can train).
--fix writes a cleaned copy and lists every change (also in OUT.changes.txt); the input is never modified.
--draw N renders N images with their boxes and class names as loaded (left) and as the training
transforms augment them (right) into --out, so you see exactly what the model learns from.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from ..choices import EXIF_ORIENTATION_MODES

EXIT_OK, EXIT_CANNOT_TRAIN, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="check_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", required=True, help="folder the file_name entries are relative to")
    parser.add_argument("--annotations", required=True, help="COCO instances JSON")
    parser.add_argument("--level", choices=("fast", "headers", "full"), default="full",
                        help="fast: JSON + file listing; headers: + each image header (size, EXIF, pixel "
                             "limit); full (default): + decode every image (corrupt/truncated files)")
    parser.add_argument("--fix", metavar="OUT.json", help="write a cleaned copy here and list every change")
    parser.add_argument("--draw", type=int, default=0, metavar="N", help="render N images (needs --out)")
    parser.add_argument("--out", help="folder for --draw renderings")
    parser.add_argument("--image-size", type=int, default=512, help="training input size for --draw (512)")
    parser.add_argument("--scale-range", type=float, nargs=2, default=(0.1, 2.0), metavar=("LOW", "HIGH"),
                        help="training scale jitter for --draw (default: the paper's 0.1 2.0)")
    parser.add_argument("--seed", type=int, default=0, help="which images --draw picks and how it augments")
    parser.add_argument("--json", metavar="REPORT.json", help="also write the report as JSON")
    parser.add_argument("--max-lines", type=int, default=20, help="findings shown per kind (default 20)")
    parser.add_argument("--allow-outside-images", action="store_true",
                        help="accept file_name values that are absolute or leave the images folder")
    parser.add_argument("--max-image-pixels", type=int, default=None,
                        help="decompression-bomb limit in pixels (default 178956970; 0 = none)")
    parser.add_argument("--exif-orientation", choices=EXIF_ORIENTATION_MODES, default="apply",
                        help="apply (default): images as displayed (EXIF orientation applied, as annotation tools "
                             "show them): the JSON's width/height must be the displayed size; ignore: the stored "
                             "pixels (config data.exif_orientation)")
    return parser


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not Path(args.images).is_dir():
        parser.error(f"--images '{args.images}' is not a folder")
    if not Path(args.annotations).is_file():
        parser.error(f"--annotations '{args.annotations}' does not exist")
    if args.draw < 0:
        parser.error("--draw must be >= 0")
    if args.draw and not args.out:
        parser.error("--draw needs --out DIR (where the renderings go)")
    if args.fix and os.path.abspath(args.fix) == os.path.abspath(args.annotations):
        parser.error("--fix must name a new file: the original annotations are never modified")


def _write_fixed(args: argparse.Namespace, report: Any) -> tuple:
    from ..data.checks import check_dataset, fix_dataset, load_annotations
    from ..fileio import write_json_atomic

    data = load_annotations(args.annotations)
    if data is None:
        print(f"\n--fix: nothing written: '{args.annotations}' is not a COCO file", file=sys.stderr)
        return None, None
    cleaned, changes = fix_dataset(data, report)
    write_json_atomic(args.fix, cleaned)
    changes_path = Path(str(args.fix) + ".changes.txt")
    changes_path.write_text("\n".join(changes) + "\n", encoding="utf-8")
    print(f"\n--fix: wrote '{args.fix}' ({len(cleaned['images'])} images, {len(cleaned['annotations'])} "
          f"annotations) with {len(changes)} changes (also in '{changes_path}'):")
    for line in changes[: max(args.max_lines * 5, 50)]:
        print(f"  {line}")
    if len(changes) > max(args.max_lines * 5, 50):
        print(f"  ... see '{changes_path}' for all of them")
    recheck = check_dataset(args.images, args.fix, level="fast", data=cleaned,
                            allow_outside_images=args.allow_outside_images, exif_orientation=args.exif_orientation)
    verdict = "can train" if recheck.can_train else "still cannot train: " + ", ".join(
        sorted(recheck.codes("fatal", "error")))
    print(f"the cleaned copy {verdict}")
    return cleaned, recheck


def draw_samples(images_dir: str, annotations: str, data: Optional[dict[str, Any]], out: Path, count: int,
                 image_size: int, scale_range: Sequence[float], seed: int,
                 allow_outside_images: bool = False, exif_orientation: str = "apply") -> list[Path]:
    """Render ``count`` images: boxes and names as loaded | as augmented by the training transforms."""
    import cv2
    import numpy as np
    import torch

    from ..data import CocoDetection, DetectionSample, train_transforms
    from ..data.visualize import draw_boxes, side_by_side

    dataset = CocoDetection(images_dir, annotations, transform=None, annotations_data=data,
                            allow_outside_images=allow_outside_images, exif_orientation=exif_orientation)
    augment = train_transforms(image_size, tuple(scale_range))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(dataset))[: min(count, len(dataset))]
    torch.manual_seed(seed)  # the transforms draw from torch's generator
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for rank, index in enumerate(order.tolist()):
        sample = dataset[index]
        names = [dataset.class_names[int(label)] for label in sample["labels"]]
        loaded = draw_boxes(sample["image"], sample["boxes"], names, labels=sample["labels"].tolist())
        augmented = augment(DetectionSample(sample["image"], sample["boxes"], sample["labels"],
                                            sample["crowd_boxes"]))
        image = augmented.image.permute(1, 2, 0).numpy()
        boxes, labels = augmented.boxes.numpy(), augmented.labels.numpy()
        seen = draw_boxes(image, boxes, [dataset.class_names[int(l)] for l in labels], labels=labels.tolist())
        height, width = sample["image"].shape[:2]
        panel = side_by_side(
            [loaded, seen],
            [f"as loaded: {width}x{height}, {len(names)} boxes",
             f"training input {image_size}x{image_size}: {len(labels)} boxes"])
        name = Path(str(dataset._file_names[index])).stem
        path = out / f"{rank:03d}_{name}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
        written.append(path)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ..data.checks import check_dataset
    from ..fileio import write_json_atomic

    report = check_dataset(args.images, args.annotations, level=args.level,
                           allow_outside_images=args.allow_outside_images, max_image_pixels=args.max_image_pixels,
                           exif_orientation=args.exif_orientation)
    print(report.format_text(max_per_code=args.max_lines))
    if args.json:
        write_json_atomic(args.json, report.to_dict())
    code = report.exit_code
    draw_data, draw_ok = None, report.can_train or not report.of("fatal")
    if args.fix:
        cleaned, recheck = _write_fixed(args, report)
        if recheck is not None:
            code = recheck.exit_code
            draw_data, draw_ok = cleaned, not recheck.of("fatal")
    if args.draw:
        if not draw_ok:
            print("\n--draw: skipped: the data has fatal problems (add --fix OUT.json to draw the cleaned copy)",
                  file=sys.stderr)
        else:
            try:
                written = draw_samples(args.images, args.fix or args.annotations, draw_data, Path(args.out),
                                       args.draw, args.image_size, args.scale_range, args.seed,
                                       args.allow_outside_images, args.exif_orientation)
                print(f"\n--draw: {len(written)} renderings (as loaded | as augmented for training) in '{args.out}'")
            except (ValueError, RuntimeError) as error:
                print(f"\n--draw: skipped: {error}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
