"""Convert a Pascal VOC or YOLO dataset to one COCO JSON (boxes in pixels, category names kept).

    python tools/convert_dataset.py --from voc VOC_ROOT|ANNOTATIONS_DIR|ImageSets/Main/train.txt --out train.json
    python tools/convert_dataset.py --from yolo ROOT|IMAGES_DIR [--labels LABELS_DIR] [--classes classes.txt] --out train.json
    python tools/convert_dataset.py --from yolo data.yaml --split val --out val.json

YOLO labels are found where YOLO tools look for them: each image's path with its last `images` folder replaced
by `labels` and the extension by .txt (ROOT/images/train/a.jpg -> ROOT/labels/train/a.txt), else beside the
image; so the dataset root, a split's images folder and data.yaml all work. Images without a single label file
stop with an error that says where the labels were looked for.

The JSON's file_name entries are relative to the images folder, which is printed: train with
data.train.images=<that folder> data.train.annotations=<OUT.json>, or let train.py convert on the fly
with data.format=voc|yolo. The converted data then goes through the fast data checks; exit code 1 when
they find problems that stop training (see tools/check_data.py), 2 for bad arguments or unreadable input.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from ..choices import EXIF_ORIENTATION_MODES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convert_dataset", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", help="VOC: root, Annotations folder or split list; YOLO: dataset root, images "
                                       "folder or data.yaml")
    parser.add_argument("--from", dest="fmt", choices=("voc", "yolo"), required=True, help="source format")
    parser.add_argument("--out", required=True, help="COCO JSON to write")
    parser.add_argument("--images", help="images folder (VOC: default JPEGImages beside Annotations)")
    parser.add_argument("--labels", help="YOLO labels folder mirroring the images folder (default: per image, its "
                                         "path's last 'images' folder -> 'labels', else beside the image)")
    parser.add_argument("--classes", help="class names: classes.txt (one per line) or data.yaml (names:)")
    parser.add_argument("--split", default="train", help="split of a YOLO data.yaml (default train)")
    parser.add_argument("--difficult", choices=("keep", "ignore", "drop"), default="keep",
                        help="VOC difficult objects: keep (default), ignore (crowd regions) or drop")
    parser.add_argument("--exif-orientation", choices=EXIF_ORIENTATION_MODES, default="apply",
                        help="apply (default): image sizes as displayed (EXIF orientation applied, as annotation "
                             "tools show the images); ignore: the stored size (config data.exif_orientation)")
    return parser


def convert(args: argparse.Namespace) -> tuple:
    """(COCO dict, images folder) for the parsed arguments."""
    from ..data.yolo import load_data_yaml, read_class_names, yolo_to_coco

    classes = read_class_names(args.classes) if args.classes else None
    if args.fmt == "voc":
        from ..data.voc import voc_sources, voc_to_coco

        files, images_dir = voc_sources(args.source, args.images)
        return voc_to_coco(files, images_dir, classes, args.difficult, args.exif_orientation), images_dir
    source = Path(args.source)
    if source.suffix.lower() in (".yaml", ".yml"):
        images_dir, _, names = load_data_yaml(source, args.split)
        return yolo_to_coco(images_dir, args.labels, classes or names, args.exif_orientation), images_dir
    return yolo_to_coco(source, args.labels, classes, args.exif_orientation), source


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from ..data.checks import check_dataset
    from ..fileio import write_json_atomic

    try:
        data, images_dir = convert(args)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_json_atomic(args.out, data)
    names = [c["name"] for c in data["categories"]]
    print(f"wrote '{args.out}': {len(data['images'])} images, {len(data['annotations'])} boxes, "
          f"{len(names)} categories {names}; file names are relative to '{images_dir}'")
    for skipped in data.get("info", {}).get("skipped", []):
        print(f"skipped '{skipped['file_name']}': {skipped['reason']}", file=sys.stderr)
    report = check_dataset(images_dir, args.out, level="fast", data=data, exif_orientation=args.exif_orientation)
    problems = report.of("fatal", "error")
    for finding in problems[:20]:
        print(f"  {finding.severity}: {finding.line()}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problems: run tools/check_data.py --images {images_dir} --annotations {args.out}",
              file=sys.stderr)
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
