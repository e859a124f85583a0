"""COCO evaluation of a trained checkpoint (or of an existing results file).

    python tools/eval.py --weights CKPT --images DIR --annotations JSON [--out DIR] [eval.key=value ...]
    python tools/eval.py --weights CKPT --images DIR [--image-info JSON] [--out DIR]     (test-dev style)
    python tools/eval.py --results RESULTS.json --annotations JSON [--out DIR] [eval.max_detections=N]  (score a file)

With annotations: runs the model over the set (the same dataset, letterbox and decoding as training's
validation, so the numbers match what training logged) and scores it, like --results and training's
validation, against the annotation file as the official COCO tools read it (boxes as written, not clipped;
every image, also those whose file is missing); prints the 12-line COCO table and a per-class AP table,
writes OUT/metrics.json (the 12 stats AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl as 0..1 floats,
plus per_class) and OUT/detections.json (COCO results: image_id, category_id of the dataset, bbox xywh, score).

Without annotations: writes only OUT/detections.json for every image in --images (for a submission).
Image ids come from --image-info (a COCO JSON with an "images" list, e.g. image_info_test-dev2017.json),
else they are 1..N in file-name order and OUT/image_ids.json maps them to file names (and lists the
files that could not be read).

Images are read as training read them (the training config's data.exif_orientation; default apply: as
displayed). Post-processing defaults to the checkpoint's training config `eval` section; eval.key=value arguments
(the same overrides as tools/train.py) change it: eval.score_threshold, eval.pre_nms_top_k, eval.nms (soft|hard),
eval.iou_threshold, eval.soft_nms_sigma, eval.max_detections, eval.hflip_tta (true|false), and sliced inference of
large images: eval.slice_size (pixels; images with a longer side are detected slice by slice), eval.slice_overlap,
eval.slice_full_image, eval.merge (nms|nmm), eval.merge_metric (iou|ios), eval.merge_threshold, eval.slice_batch_size.
COCO scores max(100, eval.max_detections) detections per image (metrics.json "max_dets"). The old form without
`eval.` (nms=hard) still works for one release, with a deprecation message.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from ..choices import COCO_EVALUATORS, RUNTIMES
from ..logs import setup_console_logging

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="effdet-eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", metavar="eval.key=value",
                        help="post-processing overrides, e.g. eval.nms=hard eval.score_threshold=0.05 "
                             "eval.hflip_tta=true")
    parser.add_argument("--weights", help="checkpoint (.ckpt written by tools/train.py)")
    parser.add_argument("--images", help="folder the annotation file names are relative to")
    parser.add_argument("--annotations", help="COCO instances JSON (ground truth); omit for test-dev style")
    parser.add_argument("--out", default="runs/eval", help="output folder (default runs/eval)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="images per forward pass (default: the validation batch size of the training run)")
    parser.add_argument("--workers", type=int, default=2, help="data loader worker processes (default 2)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="torch",
                        help="network runtime (default torch); --weights may also be an .onnx file from effdet-export")
    parser.add_argument("--device", default=None, help="cuda, cuda:1, cpu ... (default: cuda if available)")
    parser.add_argument("--coco-eval", choices=COCO_EVALUATORS, default=None,
                        help="COCO evaluator (default: the training config's eval.coco_eval, else pycocotools)")
    parser.add_argument("--backend", choices=COCO_EVALUATORS, default=None, dest="deprecated_backend",
                        help="deprecated name of --coco-eval (removed in the next release)")
    parser.add_argument("--results", help="score this COCO results JSON against --annotations (no model)")
    parser.add_argument("--image-info", help="test-dev style: COCO JSON whose 'images' give ids and file names")
    parser.add_argument("--allow-outside-images", action="store_true",
                        help="accept file_name values that are absolute or leave --images (refused by default)")
    parser.add_argument("--sort-classes", choices=("name", "ap"), default="name", help="per-class table order")
    parser.add_argument("--plots", action="store_true", help="also write the error analysis next to metrics.json: "
                        "pr_curves.png, per_class_ap.png, confusion_matrix.png/.json, errors.png/.json/.txt, gallery/")
    parser.add_argument("--plot-score-thr", type=float, default=0.5,
                        help="score threshold of the confusion matrix and gallery (default 0.5; IoU 0.5)")
    parser.add_argument("--gallery", type=int, default=8, help="images with the most errors drawn (default 8)")
    return parser


def _write_plots(args: argparse.Namespace, coco_gt: Any, results: Any, names: Any = None,
                 exif_orientation: str = "apply", max_dets: int = 100) -> None:
    from ..evaluation.analysis import analyze, format_error_table

    summary = analyze(coco_gt, results, Path(args.out), images_dir=args.images, class_names=names,
                      exif_orientation=exif_orientation, allow_outside_images=args.allow_outside_images,
                      score_threshold=args.plot_score_thr, gallery=args.gallery, max_dets=max_dets)
    print("\n" + format_error_table(summary["errors"]))
    print(f"error analysis: {len(summary['files'])} files in {args.out}")


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.deprecated_backend:
        if args.coco_eval not in (None, args.deprecated_backend):
            parser.error("--backend (deprecated) and --coco-eval disagree; pass --coco-eval only")
        print(f"warning: --backend is deprecated and will be removed in the next release: use --coco-eval "
              f"{args.deprecated_backend}", file=sys.stderr)
        args.coco_eval = args.deprecated_backend
    if args.results:
        if not args.annotations:
            parser.error("--results needs --annotations (the ground truth to score against)")
        if [item for item in args.overrides if item.partition("=")[0].strip() != "eval.max_detections"]:
            parser.error("eval.key=value post-processing overrides have no effect with --results (except "
                         "eval.max_detections=N: score N detections per image instead of COCO's 100)")
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


def _report(args: argparse.Namespace, metrics: dict[str, Any], extra: dict[str, Any]) -> Path:
    """Print the COCO and per-class tables; write OUT/metrics.json."""
    from ..evaluation.report import STAT_KEYS, format_coco_summary, format_per_class_table, save_metrics

    print(format_coco_summary(metrics) + "\n\n" + format_per_class_table(metrics["per_class"], sort_by=args.sort_classes))
    path = Path(args.out) / "metrics.json"
    save_metrics(path, dict({key: metrics[key] for key in STAT_KEYS}, per_class=metrics["per_class"],
                            max_dets=metrics.get("max_dets", 100)), extra=extra)
    return path


def run(args: argparse.Namespace) -> int:
    from ..data import CocoDetection, eval_transforms
    from ..data.sources import ImageFileDataset, image_items
    from ..evaluation.report import category_warnings, detect, evaluate, evaluate_coco
    from ..fileio import write_json_atomic
    from ..inference.predictor import load_predictor
    from ..modeling.postprocess_settings import make_postprocess_settings
    from ..engine.schema import postprocess_options

    out = Path(args.out)
    if args.results:
        coco_eval = args.coco_eval or "pycocotools"
        options, _ = postprocess_options(args.overrides, "effdet-eval --results")
        max_dets = make_postprocess_settings(None, options).max_detections  # checked as everywhere
        metrics = evaluate_coco(args.annotations, args.results, coco_eval=coco_eval, verbose=False, max_dets=max_dets)
        path = _report(args, metrics, {"results": str(args.results), "annotations": str(args.annotations),
                                       "coco_eval": coco_eval})
        print(f"\nscored {args.results} ({coco_eval}); metrics: {path}")
        if args.plots:
            _write_plots(args, args.annotations, args.results, max_dets=max_dets)
        return 0
    options, _ = postprocess_options(args.overrides, "effdet-eval")
    predictor = load_predictor(args.weights, args.runtime, device=args.device, **options)
    print(f"{predictor}", file=sys.stderr)
    train_config = predictor.train_config or {}
    data = train_config.get("data") or {}  # training's validation batch size: even float rounding matches
    loading = dict(batch_size=args.batch_size or int(data.get("val_batch_size") or data.get("batch_size") or 8),
                   workers=args.workers, progress=True)
    if args.annotations:
        dataset = CocoDetection(args.images, args.annotations,
                                transform=eval_transforms(predictor.image_size, predictor.fill), check_files=True,
                                exif_orientation=predictor.exif_orientation,
                                allow_outside_images=args.allow_outside_images)
        for warning in category_warnings(predictor, dataset):
            print(f"warning: {warning}", file=sys.stderr)
        trained = train_config.get("eval") or {}  # checkpoints before the rename say eval.backend
        coco_eval = args.coco_eval or str(trained.get("coco_eval") or trained.get("backend") or "pycocotools")
        metrics = evaluate(predictor, dataset, coco_eval=coco_eval, **loading)
        if dataset.failed_files:
            print(f"warning: {len(dataset.failed_files)} image(s) could not be read and count as misses: "
                  f"{sorted(dataset.failed_files)[:5]}", file=sys.stderr)
        if dataset.report["missing_files"]:
            print(f"warning: {dataset.report['missing_files']} image file(s) of the annotations were not found and "
                  f"their objects count as misses: {dataset.report['missing_files_examples'][:5]}", file=sys.stderr)
        write_json_atomic(out / "detections.json", metrics["results"], indent=None)
        print(f"\n{args.weights} on {len(dataset)} images of {args.annotations}")
        path = _report(args, metrics, {"checkpoint": str(args.weights), "annotations": str(args.annotations),
                                       "images": str(args.images), "coco_eval": coco_eval,
                                       "postprocess": vars(predictor.settings).copy()})
        print(f"\n{len(dataset)} images in {metrics['seconds']:.1f} s "
              f"({len(dataset) / max(metrics['seconds'], 1e-9):.1f} img/s); metrics: {path}; "
              f"detections: {out / 'detections.json'}")
        if args.plots:
            names = dict(zip(predictor.category_ids, predictor.class_names))
            _write_plots(args, dataset.ground_truth, metrics["results"], names, predictor.exif_orientation,
                         max_dets=predictor.settings.max_detections)
        return 0
    items, from_info = image_items(args.images, args.image_info, args.allow_outside_images)
    if not items:
        print(f"error: no images found in {args.images}", file=sys.stderr)
        return 1
    found = detect(predictor, ImageFileDataset(items, predictor.image_size, predictor.fill, predictor.exif_orientation),
                   root=args.images, **loading)
    for path, reason in found["failed"]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    write_json_atomic(out / "detections.json", found["results"], indent=None)
    message = f"\n{len(found['images'])} images, {len(found['results'])} detections: {out / 'detections.json'}"
    if not from_info:
        write_json_atomic(out / "image_ids.json", {"images": found["images"], "skipped": found["skipped"]})
        message += f" (image ids -> file names: {out / 'image_ids.json'})"
    print(message)
    return 0 if found["images"] else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # overrides anywhere, as for the other tools
    _check_arguments(parser, args)
    setup_console_logging(logging.WARNING)
    try:
        return run(args)
    except (ValueError, FileNotFoundError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
