"""Run a Predictor over image files, folders, globs and videos and write what ``tools/infer.py`` promises:
annotated copies (images; videos as .mp4 or, without a codec, as frames) and one record per image/frame."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import cv2
import numpy as np

from ..data.sources import VideoSource, expand_sources, iter_batches
from ..fileio import write_json_atomic
from ..data.preprocess import ImageReadError, load_image
from ..data.visualize import Display, draw_detections

WRITABLE_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


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
        self.seconds = 0.0

    def _readable_images(self, paths: Sequence[Path]) -> Iterator[tuple[Path, np.ndarray]]:
        for path in paths:
            if self.remaining <= 0 or self.stopped:
                return
            try:
                image = load_image(path, getattr(self.predictor, "exif_orientation", "apply"))
            except ImageReadError as error:
                self.report_failure(str(path), error.reason)
                continue
            self.remaining -= 1
            yield path, image

    def report_failure(self, name: str, reason: str) -> None:
        self.failed.append((name, reason))
        print(f"skipped {name}: {reason}", file=sys.stderr)

    def run_images(self, paths: Sequence[Path]) -> None:
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
        video = VideoSource(path)
        if not video.opened:
            video.close()
            self.report_failure(str(path), "OpenCV cannot open it as a video")
            return
        fps = video.fps
        writer: Optional[Any] = None
        frames_dir: Optional[Path] = None
        target = self.names.video(path)
        frame_index, video_detections, start = 0, 0, time.perf_counter()
        try:
            while self.remaining > 0 and not self.stopped:
                frames = video.read(int(min(self.batch_size, self.remaining)))
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
            video.close()
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


def annotate_sources(predictor: Any, sources: Sequence[str], out: Path, *, batch_size: int = 4,
                     limit: Optional[int] = None, show: bool = False) -> Runner:
    """Detect on every image and video frame of ``sources`` (files, folders, globs, videos), write annotated
    copies to ``out`` and ``out/detections.json``; unreadable inputs are reported and skipped. Returns the
    :class:`Runner` (counts, ``records``, ``failed``, ``seconds``)."""
    inputs = expand_sources(sources)
    out.mkdir(parents=True, exist_ok=True)
    display = Display(show)
    runner = Runner(predictor, out, batch_size, limit, display)
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
    runner.seconds = time.perf_counter() - start
    write_json_atomic(out / "detections.json", runner.records, indent=None)
    return runner


__all__ = ["OutputNames", "Runner", "annotate_sources"]
