"""Run a trained detector on images, folders, globs or videos; write annotated copies and detections.

    python tools/infer.py SOURCE [SOURCE ...] --weights CKPT [--out DIR] [--score-thr 0.3] [--limit N] [--show]
                          [eval.key=value ...]

A SOURCE is an image file, a folder (every file directly in it), a glob ("photos/*.jpg", quoted) or a
video file (.mp4 .avi .mov .mkv ...). Writes to OUT (default runs/infer):
  * an annotated copy of every image (boxes, class names and scores), same file name;
  * for a video, an annotated video OUT/<name>.mp4 (or its frames in OUT/<name>/ if no codec is available);
  * OUT/detections.json: per image {file, [frame,] width, height, boxes (xyxy pixels), scores, labels, names}.
Unreadable and non-image files are reported by name and skipped; the exit code is non-zero only if
nothing could be processed. Without --weights the demo run's runs/demo/checkpoints/best.ckpt is used
when it exists.

Post-processing: the checkpoint's (its training config's `eval` section), with a score threshold of 0.3 unless one
is given; eval.key=value arguments change it, as for tools/train.py and tools/eval.py (eval.nms=hard,
eval.max_detections=50, eval.hflip_tta=true ...; large images slice by slice with eval.slice_size=640, see
eval.slice_overlap, eval.merge ...). An argument is such an override when its left side is a config key;
every other argument is a SOURCE. --score-thr wins over eval.score_threshold (the log says so when both are given).
The old `--set key=value` still works for one release, with a deprecation message.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

from ..choices import RUNTIMES
from ..logs import setup_console_logging

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEMO_WEIGHTS = Path("runs/demo/checkpoints/best.ckpt")
EXIT_NOTHING_PROCESSED = 1
EXIT_USAGE = 2
DEFAULT_SCORE_THRESHOLD = 0.3  # what a picture shows: the score threshold when neither --score-thr nor an override

NO_WEIGHTS_MESSAGE = """\
error: no weights. Pass --weights CKPT (a checkpoint written by tools/train.py). To get one:
  make demo                                   # trains the small demo detector -> runs/demo/checkpoints/best.ckpt
  python tools/train.py configs/demo.yaml     # the same training step alone (after tools/make_demo_data.py)
  python tools/train.py YOUR_CONFIG.yaml      # your own data -> <output_dir>/checkpoints/best.ckpt
  python tools/convert_weights.py ...         # convert a published EfficientDet checkpoint"""


def resolve_weights(weights: str | None) -> Path | None:
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
    parser.add_argument("sources", nargs="+", metavar="SOURCE",
                        help="image file, folder, glob or video file; or an eval.key=value override")
    parser.add_argument("--weights", help=f"checkpoint (default: {DEMO_WEIGHTS} if it exists)")
    parser.add_argument("--out", default="runs/infer", help="output folder (default runs/infer)")
    parser.add_argument("--score-thr", type=float, default=None,
                        help=f"minimum score to keep (default {DEFAULT_SCORE_THRESHOLD}); wins over "
                             "eval.score_threshold")
    parser.add_argument("--limit", type=int, default=None, help="process at most N images / video frames")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--runtime", choices=RUNTIMES, default="torch",
                        help="network runtime (default torch); --weights may also be an .onnx file from effdet-export")
    parser.add_argument("--device", default=None, help="cuda, cpu ... (default: cuda if available)")
    parser.add_argument("--show", action="store_true", help="also show each result in a window (needs a display)")
    parser.add_argument("--set", action="append", default=[], metavar="key=value",
                        help="deprecated: give eval.key=value overrides as arguments instead")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)  # overrides may stand among the SOURCEs
    if args.score_thr is not None and not 0.0 <= args.score_thr < 1.0:
        parser.error("--score-thr must be in [0, 1)")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be >= 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    setup_console_logging(logging.WARNING)
    from ..engine.schema import ConfigError, flag_wins, postprocess_options

    try:
        options, sources = postprocess_options(args.sources, "effdet-infer", sources=True)
        if args.set:
            from ..deprecation import deprecated_form

            deprecated_form("--set key=value", "eval.key=value arguments (e.g. eval.nms=hard)")
            options.update(postprocess_options(args.set, "effdet-infer --set")[0])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if not sources:
        parser.error("give at least one SOURCE (image file, folder, glob or video file)")
    flag_wins(options, "score_threshold", "--score-thr", args.score_thr)
    options.setdefault("score_threshold", DEFAULT_SCORE_THRESHOLD)

    weights = resolve_weights(args.weights)
    if weights is None:
        print(NO_WEIGHTS_MESSAGE, file=sys.stderr)
        return EXIT_USAGE
    from ..inference.annotate import annotate_sources
    from ..inference.predictor import load_predictor

    try:
        predictor = load_predictor(weights, args.runtime, device=args.device, **options)
    except FileNotFoundError as error:
        print(f"error: {error}\n\n" + NO_WEIGHTS_MESSAGE.split("\n", 1)[1], file=sys.stderr)
        return EXIT_USAGE
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE

    out = Path(args.out)
    runner = annotate_sources(predictor, sources, out, batch_size=args.batch_size, limit=args.limit,
                              show=args.show)
    processed = runner.images_done + runner.frames_done
    if runner.failed:
        names = ", ".join(name for name, _ in runner.failed)
        print(f"skipped {len(runner.failed)} unreadable input(s): {names}", file=sys.stderr)
    if processed == 0:
        print(f"error: nothing could be processed (sources: {' '.join(sources)})", file=sys.stderr)
        return EXIT_NOTHING_PROCESSED
    counts = f"{runner.images_done} image(s)" + (f", {runner.frames_done} video frame(s)" if runner.frames_done else "")
    print(f"done: {counts}, {runner.detections} detections (score >= {predictor.settings.score_threshold}) in "
          f"{runner.seconds:.1f} s; "
          f"detections: {out / 'detections.json'}")
    print(f"annotated images: {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
