#!/usr/bin/env python
"""COCO evaluation of a trained checkpoint (or of an existing results file).

    python tools/eval.py --weights CKPT --images DIR --annotations JSON [--out DIR] [key=value ...]
    python tools/eval.py --weights CKPT --images DIR [--image-info JSON] [--out DIR]     (test-dev style)
    python tools/eval.py --results RESULTS.json --annotations JSON [--out DIR]          (score a file)

With annotations: runs the model over the set (the same dataset, letterbox and decoding as training's
validation, so the numbers match what training logged), prints the 12-line COCO table and a per-class AP
table, writes OUT/metrics.json (the 12 stats AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl as 0..1
floats, plus per_class) and OUT/detections.json (COCO results: image_id, category_id of the dataset,
bbox xywh, score).

Without annotations: writes only OUT/detections.json for every image in --images (for a submission).
Image ids come from --image-info (a COCO JSON with an "images" list, e.g. image_info_test-dev2017.json),
else they are 1..N in file-name order and OUT/image_ids.json maps them to file names (and lists the
files that could not be read).

Post-processing defaults to the checkpoint's training config `eval` section; key=value arguments
override it: score_threshold, pre_nms_top_k, nms (soft|hard), iou_threshold, soft_nms_sigma,
max_detections, hflip_tta (true|false).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="post-processing overrides, e.g. nms=hard score_threshold=0.05 hflip_tta=true")
    parser.add_argument("--weights", help="checkpoint (.ckpt written by tools/train.py)")
    parser.add_argument("--images", help="folder the annotation file names are relative to")
    parser.add_argument("--annotations", help="COCO instances JSON (ground truth); omit for test-dev style")
    parser.add_argument("--out", default="runs/eval", help="output folder (default runs/eval)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass (default: the validation batch size of the training run)")
    parser.add_argument("--workers", type=int, default=2, help="data loader worker processes (default 2)")
    parser.add_argument("--runtime", choices=("torch", "onnxruntime", "openvino"), default="torch",
                        help="network runtime (default torch); --weights may also be an .onnx file from effdet-export")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu ... (default: cuda if available)")
    parser.add_argument("--backend", choices=("pycocotools", "faster_coco_eval"), default=None,
                        help="COCO evaluator (default: the training config's eval.backend, else pycocotools)")
    parser.add_argument("--results", help="score this COCO results JSON against --annotations (no model)")
    parser.add_argument("--image-info", help="test-dev style: COCO JSON whose 'images' give ids and file names")
    parser.add_argument("--sort-classes", choices=("name", "ap"), default="name", help="per-class table order")
    return parser


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.results:
        if not args.annotations:
            parser.error("--results needs --annotations (the ground truth to score against)")
        if args.overrides:
            parser.error("key=value post-processing overrides have no effect with --results")
        return
    missing = [name for name in ("weights", "images") if not getattr(args, name)]
    if missing:
        parser.error(f"missing {' and '.join('--' + m for m in missing)} (or pass --results to score a file)")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.workers < 0:
        parser.error("--workers must be >= 0")
    for name in ("weights", "annotations", "results", "image_info"):
        value = getattr(args, name)
        if value and not Path(value).is_file():
            parser.error(f"--{name.replace('_', '-')} '{value}' does not exist")
    if args.images and not Path(args.images).is_dir():
        parser.error(f"--images '{args.images}' is not a folder")


def _print_tables(metrics: dict[str, Any], sort_by: str) -> None:
    from effdet.evaluation import format_coco_summary, format_per_class_table

    print(format_coco_summary(metrics))
    print()
    print(format_per_class_table(metrics["per_class"], sort_by=sort_by))


def _save(out: Path, metrics: dict[str, Any], extra: dict[str, Any]) -> Path:
    from effdet.evaluation import STAT_KEYS, save_metrics

    stats = {key: metrics[key] for key in STAT_KEYS}
    stats["per_class"] = metrics["per_class"]
    path = out / "metrics.json"
    save_metrics(path, stats, extra=extra)
    return path


def _default_backend(predictor: Any) -> str:
    section = (predictor.train_config or {}).get("eval") or {}
    return str(section.get("backend") or "pycocotools")


def _default_batch_size(predictor: Any) -> int:
    """The batch size validation used in training (so even batch-dependent float rounding matches)."""
    data = (predictor.train_config or {}).get("data") or {}
    return int(data.get("val_batch_size") or data.get("batch_size") or 8)


def score_results(args: argparse.Namespace) -> int:
    """--results: evaluate an existing COCO results file."""
    from effdet.evaluation import evaluate_coco

    backend = args.backend or "pycocotools"
    start = time.perf_counter()
    metrics = evaluate_coco(args.annotations, args.results, backend=backend, verbose=False)
    _print_tables(metrics, args.sort_classes)
    out = Path(args.out)
    path = _save(out, metrics, {"results": str(args.results), "annotations": str(args.annotations),
                                "backend": backend})
    print(f"\nscored {args.results} in {time.perf_counter() - start:.1f} s ({backend}); metrics: {path}")
    return 0


def _loader(dataset: Any, batch_size: int, workers: int, collate: Any) -> Any:
    import torch
    from torch.utils.data import DataLoader

    from effdet.data import worker_init_fn

    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
                      worker_init_fn=worker_init_fn, pin_memory=torch.cuda.is_available())


def _check_categories(predictor: Any, dataset: Any) -> None:
    model_ids = dict(zip(predictor.category_ids, predictor.class_names))
    not_predicted = [c for c in dataset.category_ids if c not in model_ids]
    if not_predicted:
        print(f"warning: the model does not predict categories {not_predicted} of the annotations "
              f"(model category ids {predictor.category_ids}); they score AP 0", file=sys.stderr)
    renamed = [(c, model_ids[c], n) for c, n in zip(dataset.category_ids, dataset.class_names)
               if c in model_ids and model_ids[c] != n]
    if renamed:
        print(f"warning: category names differ between model and annotations (id, model, annotations): "
              f"{renamed[:5]}", file=sys.stderr)


def _progress(iterable: Any, total: int, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(iterable, total=total, unit=unit, desc="eval", dynamic_ncols=True, file=sys.stderr)


def evaluate_checkpoint(args: argparse.Namespace, predictor: Any) -> int:
    """With --annotations: detections over the set as validation makes them, then COCO metrics."""
    from effdet.data import CocoDetection, collate_detection, eval_transforms
    from effdet.evaluation import detections_to_coco_results, evaluate_coco, write_json_atomic

    dataset = CocoDetection(args.images, args.annotations,
                            transform=eval_transforms(predictor.image_size, predictor.fill), check_files=True)
    _check_categories(predictor, dataset)
    batch_size = args.batch_size or _default_batch_size(predictor)
    loader = _loader(dataset, batch_size, args.workers, collate_detection)
    # One entry per image id, the latest kept, results ordered by image id: as training's CocoEvaluator.
    by_image: dict[int, list[dict]] = {}
    start = time.perf_counter()
    for batch in _progress(loader, len(loader), "batch"):
        detections = predictor.detect(batch["images"], batch["scales"], batch["orig_sizes"])
        for image_id, det in zip(batch["image_ids"].tolist(), detections):
            by_image[image_id] = detections_to_coco_results([image_id], [det], predictor.category_ids)
    seconds = time.perf_counter() - start
    results = [r for image_id in sorted(by_image) for r in by_image[image_id]]
    if dataset.failed_files:
        print(f"warning: {len(dataset.failed_files)} image(s) could not be read and count as misses: "
              f"{sorted(dataset.failed_files)[:5]}", file=sys.stderr)

    backend = args.backend or _default_backend(predictor)
    names = dict(zip(predictor.category_ids, predictor.class_names))
    metrics = evaluate_coco(dataset.coco, results, backend=backend, class_names=names, verbose=False)
    out = Path(args.out)
    detections_path = out / "detections.json"
    write_json_atomic(detections_path, results, indent=None)
    print(f"\n{args.weights} on {len(dataset)} images of {args.annotations}")
    _print_tables(metrics, args.sort_classes)
    metrics_path = _save(out, metrics, {
        "checkpoint": str(args.weights), "annotations": str(args.annotations), "images": str(args.images),
        "backend": backend, "postprocess": vars(predictor.settings).copy()})
    print(f"\n{len(dataset)} images in {seconds:.1f} s ({len(dataset) / max(seconds, 1e-9):.1f} img/s); "
          f"metrics: {metrics_path}; detections: {detections_path}")
    return 0


def _image_list(args: argparse.Namespace) -> tuple[list[tuple[int, Path]], bool]:
    """(image id, path) pairs for test-dev style, and whether ids came from --image-info."""
    from effdet.predictor import list_image_files

    images = Path(args.images)
    if args.image_info:
        with open(args.image_info, encoding="utf-8") as handle:
            info = json.load(handle)
        entries = info.get("images") if isinstance(info, dict) else None
        if not isinstance(entries, list):
            raise ValueError(f"--image-info '{args.image_info}' has no 'images' list")
        return [(int(e["id"]), images / str(e["file_name"])) for e in entries], True
    return [(index + 1, path) for index, path in enumerate(list_image_files(images))], False


def detect_only(args: argparse.Namespace, predictor: Any) -> int:
    """Test-dev style: detections for every image, no metrics."""
    from effdet.evaluation import detections_to_coco_results, write_json_atomic
    from effdet.predictor import ImageFileDataset, collate_image_files

    items, from_info = _image_list(args)
    if not items:
        print(f"error: no images found in {args.images}", file=sys.stderr)
        return 1
    dataset = ImageFileDataset(items, predictor.image_size, predictor.fill)
    loader = _loader(dataset, args.batch_size or _default_batch_size(predictor), args.workers, collate_image_files)
    results: list[dict] = []
    seen: list[dict] = []
    failed: list[tuple[str, str]] = []
    images_dir = Path(args.images)
    for collated in _progress(loader, len(loader), "batch"):
        failed.extend(collated["failed"])
        batch = collated["batch"]
        if batch is None:
            continue
        detections = predictor.detect(batch["images"], batch["scales"], batch["orig_sizes"])
        image_ids = batch["image_ids"].tolist()
        results.extend(detections_to_coco_results(image_ids, detections, predictor.category_ids))
        for image_id, path, (height, width) in zip(image_ids, collated["paths"], batch["orig_sizes"].tolist()):
            seen.append({"id": image_id, "file_name": os.path.relpath(path, images_dir),
                         "width": width, "height": height})
    for path, reason in failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    out = Path(args.out)
    detections_path = out / "detections.json"
    write_json_atomic(detections_path, results, indent=None)
    message = f"\n{len(seen)} images, {len(results)} detections: {detections_path}"
    if not from_info:
        skipped = [{"file_name": os.path.relpath(path, images_dir), "reason": reason} for path, reason in failed]
        write_json_atomic(out / "image_ids.json", {"images": seen, "skipped": skipped})
        message += f" (image ids -> file names: {out / 'image_ids.json'})"
    print(message)
    return 0 if seen else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.results:
            return score_results(args)
        from effdet.backends import load_predictor
        from effdet.predictor import parse_overrides

        overrides = parse_overrides(args.overrides)
        predictor = load_predictor(args.weights, args.runtime, device=args.device, **overrides)
        print(f"{predictor}", file=sys.stderr)
        if args.annotations:
            return evaluate_checkpoint(args, predictor)
        return detect_only(args, predictor)
    except (ValueError, FileNotFoundError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
