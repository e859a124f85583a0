#!/usr/bin/env python
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
import glob
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEMO_WEIGHTS = Path("runs/demo/checkpoints/best.ckpt")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
WRITABLE_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
EXIT_NOTHING_PROCESSED = 1
EXIT_USAGE = 2

NO_WEIGHTS_MESSAGE = """\
error: no weights. Pass --weights CKPT (a checkpoint written by tools/train.py). To get one:
  make demo                                   # trains the small demo detector -> runs/demo/checkpoints/best.ckpt
  python tools/train.py configs/demo.yaml     # the same training step alone (after tools/make_demo_data.py)
  python tools/train.py YOUR_CONFIG.yaml      # your own data -> <output_dir>/checkpoints/best.ckpt
  python tools/convert_weights.py ...         # convert a published EfficientDet checkpoint"""


# ------------------------------------------------------------------------------------------- drawing


def class_colour(label: int) -> tuple[int, int, int]:
    """A distinct, saturated BGR colour per class (hues spaced by the golden ratio)."""
    hue = (label * 0.618033988749895 + 0.08) % 1.0
    value = 235 if label % 2 == 0 else 200
    hsv = np.array([[[int(hue * 180), 220, value]]], dtype=np.uint8)
    return tuple(int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])  # type: ignore[return-value]


def _text_colour(background: tuple[int, int, int]) -> tuple[int, int, int]:
    blue, green, red = background
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)


def draw_detections(image_bgr: np.ndarray, detections: dict[str, Any]) -> np.ndarray:
    """A copy of ``image_bgr`` with each box (xyxy pixels) drawn in its class colour and labelled
    ``name score`` on a filled tag; line width and font grow with the image size."""
    canvas = image_bgr.copy()
    height, width = canvas.shape[:2]
    thickness = max(1, int(round((height + width) / 600)))
    font_scale = max(0.4, (height + width) / 2200)
    font = cv2.FONT_HERSHEY_SIMPLEX
    order = np.argsort(detections["scores"])  # best drawn last (on top)
    for index in order:
        x1, y1, x2, y2 = (int(round(float(v))) for v in detections["boxes"][index])
        label = int(detections["labels"][index])
        colour = class_colour(label)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        text = f"{detections['names'][index]} {float(detections['scores'][index]):.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(text, font, font_scale, max(1, thickness - 1))
        top = y1 - text_h - baseline - 2
        if top < 0:  # no room above the box: put the tag inside it
            top = y1
        left = min(max(0, x1), max(0, width - text_w - 2))
        cv2.rectangle(canvas, (left, top), (left + text_w + 2, top + text_h + baseline + 2), colour, cv2.FILLED)
        cv2.putText(canvas, text, (left + 1, top + text_h + 1), font, font_scale, _text_colour(colour),
                    max(1, thickness - 1), cv2.LINE_AA)
    return canvas


# ------------------------------------------------------------------------------------------- sources


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


def resolve_weights(weights: Optional[str]) -> Optional[Path]:
    """The checkpoint to use: ``--weights``, else the demo run's best checkpoint if it exists."""
    if weights:
        return Path(weights)
    for candidate in (DEMO_WEIGHTS, PROJECT_ROOT / DEMO_WEIGHTS):
        if candidate.is_file():
            print(f"no --weights given: using the demo run's checkpoint {candidate}")
            return candidate
    return None


# ----------------------------------------------------------------------------------------- outputs


class OutputNames:
    """Unique output file names in OUT (``a.jpg``, ``a_1.jpg`` ... when two sources share a name)."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.used: set[str] = set()

    def image(self, source: Path) -> Path:
        suffix = source.suffix.lower() if source.suffix.lower() in WRITABLE_IMAGE_EXTENSIONS else ".jpg"
        return self._unique(source.stem, suffix)

    def video(self, source: Path) -> Path:
        return self._unique(source.stem, ".mp4")

    def _unique(self, stem: str, suffix: str) -> Path:
        name, count = f"{stem}{suffix}", 0
        while name in self.used:
            count += 1
            name = f"{stem}_{count}{suffix}"
        self.used.add(name)
        return self.out / name


def _record(file: str, shape: tuple[int, ...], detections: dict[str, Any], frame: Optional[int] = None) -> dict:
    entry: dict[str, Any] = {"file": file}
    if frame is not None:
        entry["frame"] = frame
    entry.update({
        "height": int(shape[0]), "width": int(shape[1]),
        "boxes": [[round(float(v), 2) for v in box] for box in detections["boxes"]],
        "scores": [round(float(s), 4) for s in detections["scores"]],
        "labels": [int(i) for i in detections["labels"]],
        "names": list(detections["names"]),
    })
    return entry


def _summary(detections: dict[str, Any], limit: int = 5) -> str:
    count = len(detections["scores"])
    if not count:
        return "no detections"
    shown = ", ".join(f"{n} {float(s):.2f}" for n, s in zip(detections["names"][:limit], detections["scores"][:limit]))
    more = f", +{count - limit} more" if count > limit else ""
    return f"{count} detection{'s' if count != 1 else ''} ({shown}{more})"


class Display:
    """``--show``: an OpenCV window when a display (and OpenCV GUI support) exists; otherwise a no-op."""

    def __init__(self, wanted: bool) -> None:
        self.enabled = False
        if not wanted:
            return
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            print("--show ignored: no display (DISPLAY is not set)", file=sys.stderr)
            return
        try:
            cv2.namedWindow("effdet", cv2.WINDOW_NORMAL)
            self.enabled = True
        except cv2.error:
            print("--show ignored: this OpenCV build has no GUI support (opencv-python-headless?)", file=sys.stderr)

    def show(self, image_bgr: np.ndarray, wait_ms: int) -> bool:
        """Show a frame; False when the user pressed q or Esc."""
        if not self.enabled:
            return True
        cv2.imshow("effdet", image_bgr)
        return cv2.waitKey(wait_ms) & 0xFF not in (ord("q"), 27)

    def close(self) -> None:
        if self.enabled:
            cv2.destroyAllWindows()


# ------------------------------------------------------------------------------------------- running


class Runner:
    """Feeds images and video frames through the predictor in batches and writes the outputs."""

    def __init__(self, predictor: Any, out: Path, batch_size: int, limit: Optional[int], display: Display) -> None:
        self.predictor = predictor
        self.out = out
        self.batch_size = batch_size
        self.remaining = limit if limit is not None else float("inf")
        self.display = display
        self.names = OutputNames(out)
        self.records: list[dict] = []
        self.failed: list[tuple[str, str]] = []
        self.images_done = 0
        self.frames_done = 0
        self.detections = 0
        self.stopped = False

    def _readable_images(self, paths: Sequence[Path]) -> Iterator[tuple[Path, np.ndarray]]:
        from effdet.preprocess import ImageReadError, load_image

        for path in paths:
            if self.remaining <= 0 or self.stopped:
                return
            try:
                image = load_image(path)
            except ImageReadError as error:
                self.report_failure(str(path), error.reason)
                continue
            self.remaining -= 1
            yield path, image

    def report_failure(self, name: str, reason: str) -> None:
        self.failed.append((name, reason))
        print(f"skipped {name}: {reason}", file=sys.stderr)

    def run_images(self, paths: Sequence[Path]) -> None:
        from effdet.predictor import iter_batches

        for batch in iter_batches(self._readable_images(paths), self.batch_size):
            results = self.predictor.predict_rgb([image for _, image in batch])
            for (path, rgb), detections in zip(batch, results):
                annotated = draw_detections(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), detections)
                target = self.names.image(path)
                if not cv2.imwrite(str(target), annotated):
                    target = self.names.image(path.with_suffix(".jpg"))
                    cv2.imwrite(str(target), annotated)
                self.records.append(_record(str(path), rgb.shape, detections))
                self.images_done += 1
                self.detections += len(detections["scores"])
                print(f"{path} ({rgb.shape[1]}x{rgb.shape[0]}): {_summary(detections)} -> {target}")
                if not self.display.show(annotated, 0):
                    self.stopped = True

    def run_video(self, path: Path) -> None:
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            self.report_failure(str(path), "OpenCV cannot open it as a video")
            return
        fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
        writer: Optional[Any] = None
        frames_dir: Optional[Path] = None
        target = self.names.video(path)
        frame_index, video_detections, start = 0, 0, time.perf_counter()
        try:
            while self.remaining > 0 and not self.stopped:
                frames = []
                while len(frames) < min(self.batch_size, self.remaining):
                    ok, frame = capture.read()
                    if not ok:
                        break
                    frames.append(frame)
                if not frames:
                    break
                self.remaining -= len(frames)
                results = self.predictor.predict(frames, bgr=True, batch_size=self.batch_size)
                for frame, detections in zip(frames, results):
                    annotated = draw_detections(frame, detections)
                    if writer is None and frames_dir is None:
                        writer, frames_dir = self._open_video_writer(target, fps, frame.shape)
                    if writer is not None:
                        writer.write(annotated)
                    else:
                        cv2.imwrite(str(frames_dir / f"frame_{frame_index:06d}.jpg"), annotated)
                    self.records.append(_record(str(path), frame.shape, detections, frame=frame_index))
                    video_detections += len(detections["scores"])
                    frame_index += 1
                    if not self.display.show(annotated, 1):
                        self.stopped = True
        finally:
            capture.release()
            if writer is not None:
                writer.release()
        if frame_index == 0:
            self.report_failure(str(path), "no frames could be read")
            return
        self.frames_done += frame_index
        self.detections += video_detections
        where = target if frames_dir is None else frames_dir
        print(f"{path}: {frame_index} frames, {video_detections} detections "
              f"({frame_index / max(time.perf_counter() - start, 1e-9):.1f} frames/s) -> {where}")

    def _open_video_writer(
        self, target: Path, fps: float, shape: tuple[int, ...]
    ) -> tuple[Optional[Any], Optional[Path]]:
        writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"mp4v"), fps, (shape[1], shape[0]))
        if writer.isOpened():
            return writer, None
        writer.release()
        frames_dir = target.with_suffix("")
        frames_dir.mkdir(parents=True, exist_ok=True)
        print(f"no video codec available: writing annotated frames to {frames_dir}", file=sys.stderr)
        return None, frames_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="image file, folder, glob or video file")
    parser.add_argument("--weights", help=f"checkpoint (default: {DEMO_WEIGHTS} if it exists)")
    parser.add_argument("--out", default="runs/infer", help="output folder (default runs/infer)")
    parser.add_argument("--score-thr", type=float, default=0.3, help="minimum score to keep (default 0.3)")
    parser.add_argument("--limit", type=int, default=None, help="process at most N images / video frames")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default 4)")
    parser.add_argument("--runtime", choices=("torch", "onnxruntime", "openvino"), default="torch",
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
    from effdet.evaluation import write_json_atomic
    from effdet.backends import load_predictor
    from effdet.predictor import parse_overrides

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

    inputs = expand_sources(args.sources)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    display = Display(args.show)
    runner = Runner(predictor, out, args.batch_size, args.limit, display)
    for source in inputs.not_found:
        runner.report_failure(source, "no such file, folder or matching glob")
    start = time.perf_counter()
    try:
        runner.run_images(inputs.images)
        for video in inputs.videos:
            if runner.remaining <= 0 or runner.stopped:
                break
            runner.run_video(video)
    finally:
        display.close()
    seconds = time.perf_counter() - start

    detections_path = out / "detections.json"
    write_json_atomic(detections_path, runner.records, indent=None)
    processed = runner.images_done + runner.frames_done
    if runner.failed:
        names = ", ".join(name for name, _ in runner.failed)
        print(f"skipped {len(runner.failed)} unreadable input(s): {names}", file=sys.stderr)
    if processed == 0:
        print(f"error: nothing could be processed (sources: {' '.join(args.sources)})", file=sys.stderr)
        return EXIT_NOTHING_PROCESSED
    counts = f"{runner.images_done} image(s)" + (f", {runner.frames_done} video frame(s)" if runner.frames_done else "")
    print(f"done: {counts}, {runner.detections} detections (score >= {args.score_thr}) in {seconds:.1f} s; "
          f"detections: {detections_path}")
    print(f"annotated images: {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
