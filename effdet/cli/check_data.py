"""Check a COCO-format dataset: one report of everything wrong or unusual, each item naming the file or id.

    python tools/check_data.py --images DIR --annotations JSON [--fix OUT.json] [--draw N --out DIR]
    python tools/check_data.py --config CONFIG.yaml [section.key=value ...]   (the config's training split)
    effdet-check-data ...                                  (the same, as a console script)

With the model's settings (--config: its model.image_size and anchors, data.tile_* and eval.max_detections, read as
training reads them; or --image-size N alone, EfficientDet-D0's anchors) it also warns when most objects come out
smaller than the smallest anchor at the input (suggesting data.tile_size and eval.slice_size) and when images hold
more objects than eval.max_detections (suggesting the value that fits), with the overrides to pass.

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
DEFAULT_IMAGE_SIZE = 512  # the input size without a config (--draw, the model checks)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="check_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="CONFIG.yaml",
                        help="a training config: the model's input size and anchors, data.tile_* and "
                             "eval.max_detections for the tiling and detection-limit checks; --images/--annotations "
                             "default to its training split (data.root + data.train.*)")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="config overrides, as tools/train.py takes them (with --config)")
    parser.add_argument("--images", help="folder the file_name entries are relative to")
    parser.add_argument("--annotations", help="COCO instances JSON")
    parser.add_argument("--level", choices=("fast", "headers", "full"), default="full",
                        help="fast: JSON + file listing; headers: + each image header (size, EXIF, pixel "
                             "limit); full (default): + decode every image (corrupt/truncated files)")
    parser.add_argument("--fix", metavar="OUT.json", help="write a cleaned copy here and list every change")
    parser.add_argument("--draw", type=int, default=0, metavar="N", help="render N images (needs --out)")
    parser.add_argument("--out", help="folder for --draw renderings")
    parser.add_argument("--image-size", type=int, default=None,
                        help=f"training input size without a config, for --draw and the tiling check (anchors of "
                             f"EfficientDet-D0; default {DEFAULT_IMAGE_SIZE}); with --config pass model.image_size=N")
    parser.add_argument("--scale-range", type=float, nargs=2, default=None, metavar=("LOW", "HIGH"),
                        help="training scale jitter for --draw (default: the config's data.scale_range, else the "
                             "paper's 0.1 2.0)")
    parser.add_argument("--seed", type=int, default=0, help="which images --draw picks and how it augments")
    parser.add_argument("--json", metavar="REPORT.json", help="also write the report as JSON")
    parser.add_argument("--max-lines", type=int, default=20, help="findings shown per kind (default 20)")
    parser.add_argument("--allow-outside-images", action="store_true",
                        help="accept file_name values that are absolute or leave the images folder")
    parser.add_argument("--max-image-pixels", type=int, default=None,
                        help="decompression-bomb limit in pixels (default: the config's data.max_image_pixels, "
                             "else 178956970; 0 = none)")
    parser.add_argument("--exif-orientation", choices=EXIF_ORIENTATION_MODES, default=None,
                        help="apply (default): images as displayed (EXIF orientation applied, as annotation tools "
                             "show them): the JSON's width/height must be the displayed size; ignore: the stored "
                             "pixels (default: the config's data.exif_orientation)")
    return parser


def _settings(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Optional[dict[str, Any]], Any]:
    """Fill in the arguments a config gives (paths of its training split, input size, scale jitter, data options)
    and return ``(the annotations as converted from VOC/YOLO or None, the ModelView of the model checks)``.
    Config problems are usage errors (exit 2) naming the key."""
    from ..data.model_checks import ModelView
    from ..modeling.variants import ModelConfig

    if args.config is None:
        if args.overrides:
            parser.error(f"overrides {args.overrides} need --config CONFIG.yaml (they change a training config)")
        args.image_size = DEFAULT_IMAGE_SIZE if args.image_size is None else args.image_size
        if args.image_size < 1:
            parser.error(f"--image-size must be >= 1 (pixels), got {args.image_size}")
        args.scale_range = args.scale_range or (0.1, 2.0)
        args.exif_orientation = args.exif_orientation or "apply"
        if args.images is None or args.annotations is None:
            parser.error("--images and --annotations are required without --config")
        return None, ModelView.of_model(ModelConfig(image_size=[args.image_size, args.image_size]))
    if args.image_size is not None:
        parser.error("--image-size is the input size without a config; with --config pass model.image_size=N")
    from ..data.tiles import TileSettings
    from ..engine.schema import ConfigError, load_train_config, resolve_model_config

    try:
        cfg = load_train_config(args.config, args.overrides)
        model = resolve_model_config(cfg.model, num_classes=1)  # the number of classes does not change the anchors
    except ConfigError as error:
        parser.error(f"--config {args.config}: {error}")
    except ValueError as error:
        parser.error(f"--config {args.config}: model section: {error}")
    data_cfg = cfg.data
    args.image_size = int(model.image_size[0])  # --draw letterboxes into squares of this side
    args.scale_range = args.scale_range or tuple(data_cfg.scale_range)
    args.exif_orientation = args.exif_orientation or data_cfg.exif_orientation
    args.allow_outside_images = args.allow_outside_images or bool(data_cfg.allow_outside_images)
    if args.max_image_pixels is None and data_cfg.max_image_pixels is not None:
        args.max_image_pixels = int(data_cfg.max_image_pixels)
    view = ModelView.of_model(model, TileSettings.from_config(data_cfg), int(cfg.eval.max_detections))
    converted = None
    if args.images is None and args.annotations is None:
        converted = _training_split(parser, args, data_cfg)
    elif args.images is None or args.annotations is None:
        parser.error("give both --images and --annotations, or neither (the config's training split)")
    return converted, view


def _training_split(parser: argparse.ArgumentParser, args: argparse.Namespace, data_cfg: Any
                    ) -> Optional[dict[str, Any]]:
    """Point --images/--annotations at the config's training split; VOC and YOLO data are converted as training
    converts them (:func:`effdet.data.formats.dataset_sources`) and returned as a COCO dict (None for COCO)."""
    from ..data.formats import dataset_sources, resolve_data_path

    if data_cfg.format == "coco":
        args.images = resolve_data_path(data_cfg.root, str(data_cfg.train.images))
        args.annotations = resolve_data_path(data_cfg.root, str(data_cfg.train.annotations))
        return None
    if args.fix:
        parser.error(f"--fix writes a COCO JSON: convert the data.format={data_cfg.format} data first "
                     f"(tools/convert_dataset.py) and pass --images/--annotations")
    from ..data.checks import DataCheckError

    try:
        source = dataset_sources(data_cfg)["train"]
    except DataCheckError as error:  # fatal problems found while converting: the report says which
        print(error.report.format_text(), file=sys.stderr)
        parser.exit(EXIT_CANNOT_TRAIN, f"check_data: {error}\n")
    except (ValueError, OSError) as error:
        parser.error(f"--config: data.format={data_cfg.format}: {error}")
    args.images, args.annotations = str(source["images_dir"]), str(source["annotations_json"])
    return source["annotations_data"]


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace, converted: bool = False) -> None:
    if not Path(args.images).is_dir():
        parser.error(f"--images '{args.images}' is not a folder")
    if not converted and not Path(args.annotations).is_file():
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
    args = parser.parse_intermixed_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    converted, view = _settings(parser, args)
    _check_arguments(parser, args, converted is not None)
    from ..data.checks import check_dataset, load_annotations
    from ..data.model_checks import check_model_view
    from ..fileio import write_json_atomic

    # read once for both checks (a file that is not COCO: check_dataset reads it again and says why)
    data = converted if converted is not None else load_annotations(args.annotations)
    report = check_dataset(args.images, args.annotations, level=args.level, data=data,
                           allow_outside_images=args.allow_outside_images, max_image_pixels=args.max_image_pixels,
                           exif_orientation=args.exif_orientation)
    if data is not None and not report.of("fatal"):
        check_model_view(report, data, view)
    print(report.format_text(max_per_code=args.max_lines))
    if args.json:
        write_json_atomic(args.json, report.to_dict())
    code = report.exit_code
    draw_data, draw_ok = converted, report.can_train or not report.of("fatal")
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
