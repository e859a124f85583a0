"""Run a trained detector on images, folders, globs or videos; write annotated copies and detections.

    python tools/infer.py SOURCE [SOURCE ...] --weights CKPT [--out DIR] [--score-thr 0.3] [--limit N] [--show]

A SOURCE is an image file, a folder (every file directly in it), a glob ("photos/*.jpg", quoted) or a
video file (.mp4 .avi .mov .mkv ...). Writes to OUT (default runs/infer):
  * an annotated copy of every image (boxes, class names and scores), same file name;
  * for a video, an annotated video OUT/<name>.mp4 (or its frames in OUT/<name>/ if no codec is available);
  * OUT/detections.json: per image {file, [frame,] width, height, boxes (xyxy pixels), scores, labels, names}.
Unreadable and non-image files are reported by name and skipped; the exit code is non-zero only if
nothing could be processed. Without --weights the demo run's runs/demo/checkpoints/best.ckpt is used
when it exists.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from effdet.choices import RUNTIMES

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_WEIGHTS = Path("runs/demo/checkpoints/best.ckpt")
EXIT_NOTHING_PROCESSED = 1
EXIT_USAGE = 2

NO_WEIGHTS_MESSAGE = """\
error: no weights. Pass --weights CKPT (a checkpoint written by tools/train.py). To get one:
  make demo                                   # trains the small demo detector -> runs/demo/checkpoints/best.ckpt
  python tools/train.py configs/demo.yaml     # the same training step alone (after tools/make_demo_data.py)
  python tools/train.py YOUR_CONFIG.yaml      # your own data -> <output_dir>/checkpoints/best.ckpt
  python tools/convert_weights.py ...         # convert a published EfficientDet checkpoint"""


def resolve_weights(weights: Optional[str]) -> Optional[Path]:
    """The checkpoint to use: ``--weights``, else the demo run's best checkpoint if it exists."""
    if weights:
        return Path(weights)
    for candidate in (DEMO_WEIGHTS, PROJECT_ROOT / DEMO_WEIGHTS):
        if candidate.is_file():
            print(f"no --weights given: using the demo run's checkpoint {candidate}")
            return candidate
    return None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="effdet-infer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="image file, folder, glob or video file")
    parser.add_argument("--weights", help=f"checkpoint (default: {DEMO_WEIGHTS} if it exists)")
    parser.add_argument("--out", default="runs/infer", help="output folder (default runs/infer)")
    parser.add_argument("--score-thr", type=float, default=0.3, help="minimum score to keep (default 0.3)")
    parser.add_argument("--limit", type=int, default=None, help="process at most N images / video frames")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="torch",
                        help="network runtime (default torch); --weights may also be an .onnx file from effdet-export")
    parser.add_argument("--device", default=None, help="cuda, cpu ... (default: cuda if available)")
    parser.add_argument("--show", action="store_true", help="also show each result in a window (needs a display)")
    parser.add_argument("--set", action="append", default=[], metavar="key=value",
                        help="other post-processing options: nms=soft, max_detections=50, hflip_tta=true ...")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0.0 <= args.score_thr < 1.0:
        parser.error("--score-thr must be in [0, 1)")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    weights = resolve_weights(args.weights)
    if weights is None:
        print(NO_WEIGHTS_MESSAGE, file=sys.stderr)
        return EXIT_USAGE
    from effdet.annotate import annotate_sources
    from effdet.predictor import load_predictor, parse_overrides

    try:
        overrides = parse_overrides(args.set)
        overrides["score_threshold"] = args.score_thr
        predictor = load_predictor(weights, args.runtime, device=args.device, **overrides)
    except FileNotFoundError as error:
        print(f"error: {error}\n\n" + NO_WEIGHTS_MESSAGE.split("\n", 1)[1], file=sys.stderr)
        return EXIT_USAGE
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE

    out = Path(args.out)
    runner = annotate_sources(predictor, args.sources, out, batch_size=args.batch_size, limit=args.limit,
                              show=args.show)
    processed = runner.images_done + runner.frames_done
    if runner.failed:
        names = ", ".join(name for name, _ in runner.failed)
        print(f"skipped {len(runner.failed)} unreadable input(s): {names}", file=sys.stderr)
    if processed == 0:
        print(f"error: nothing could be processed (sources: {' '.join(args.sources)})", file=sys.stderr)
        return EXIT_NOTHING_PROCESSED
    counts = f"{runner.images_done} image(s)" + (f", {runner.frames_done} video frame(s)" if runner.frames_done else "")
    print(f"done: {counts}, {runner.detections} detections (score >= {args.score_thr}) in {runner.seconds:.1f} s; "
          f"detections: {out / 'detections.json'}")
    print(f"annotated images: {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
