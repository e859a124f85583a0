"""Detect objects with an exported detections-form ONNX file: letterbox, normalise, run, undo the letterbox.

Pre-processing is :func:`effdet.data.preprocess.letterbox` / :func:`~effdet.data.preprocess.load_image` /
:func:`~effdet.data.preprocess.to_rgb` (the functions training and the Predictor use; that module imports torch
only inside its tensor functions); normalisation and the mapping back to original pixels are the numpy
forms of ``effdet.data.preprocess.normalize`` and ``effdet.ops.nms.scale_boxes_to_original``.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Sequence

import numpy as np

from ..deprecation import renamed_keyword
from ..data.preprocess import fill_from_mean, letterbox, load_image, normalize_to_chw, to_rgb
from ..types import ImageInput, PathLike
from .sessions import open_session

__all__ = ["OnnxDetector", "prepare_batch"]


def prepare_batch(rgb_images: Sequence[np.ndarray], image_size: Sequence[int], mean: Sequence[float],
                  std: Sequence[float]) -> tuple[dict[str, np.ndarray], list[float]]:
    """RGB uint8 images -> graph feed and letterbox scales: ``images`` float32 ``[B, 3, H, W]`` letterboxed
    (top-left, mean-colour padding) and normalised ``(x - mean) / std``; ``image_sizes`` float32 ``[B, 2]``,
    the (h, w) of each image's valid area in network pixels."""
    canvases, valid, scales = [], [], []
    height, width = (int(s) for s in image_size)
    for image in rgb_images:
        canvas, scale = letterbox(image, (height, width), fill_from_mean(mean))
        canvases.append(canvas)
        scales.append(scale)
        valid.append((min(image.shape[0] * scale, height), min(image.shape[1] * scale, width)))
    return ({"images": normalize_to_chw(canvases, mean, std),
             "image_sizes": np.asarray(valid, np.float32).reshape(-1, 2)}, scales)


class OnnxDetector:
    """An exported EfficientDet with NMS in the graph (``effdet-export --nms``), run without torch.

    Args:
        path: the ``.onnx`` file. runtime: ``"onnxruntime"``, ``"openvino"`` or ``"openvino-bf16"``
            (:mod:`effdet.runtime.sessions`; ``backend`` is its deprecated name). threads: CPU threads.
        score_threshold: drop detections scoring below it (default: keep what the graph returns, i.e. the
            export's threshold).

    Attributes:
        image_size: network input (h, w); class_names, category_ids, mean, std: from the file's metadata.
    """

    def __init__(self, path: PathLike, runtime: str = "onnxruntime", threads: int | None = None,
                 score_threshold: float | None = None, *, backend: str | None = None):
        runtime = renamed_keyword("OnnxDetector", "backend", backend, "runtime", runtime, "onnxruntime")
        self.session = open_session(path, runtime, threads)
        meta = self.session.metadata
        if meta.get("outputs") != "detections":
            raise ValueError(f"'{path}' holds raw head outputs; the runtime needs a graph with NMS: export it with "
                             "`effdet-export ... --nms` (or use effdet.Predictor.from_onnx, which decodes in torch)")
        self.metadata = meta
        self.image_size = [int(s) for s in meta["image_size"]]
        self.class_names = list(meta["class_names"])
        self.category_ids = np.asarray(meta["category_ids"], np.int64)
        self.score_threshold = score_threshold

    def preprocess(self, rgb_images: Sequence[np.ndarray]) -> tuple[dict[str, np.ndarray], list[float]]:
        """RGB uint8 images -> graph feed (``images`` normalised ``[B, 3, H, W]``, ``image_sizes`` ``[B, 2]``
        valid area in network pixels) and the letterbox scales."""
        return prepare_batch(rgb_images, self.image_size, self.metadata["mean"], self.metadata["std"])

    def predict_rgb(self, rgb_images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """One batch of RGB uint8 images -> detections (see :meth:`predict`)."""
        if not rgb_images:
            return []
        feed, scales = self.preprocess(rgb_images)
        batch_index, boxes, scores, classes = self.session.run(
            {name: feed[name] for name in self.session.input_names})
        results = []
        for image, (rgb, scale) in enumerate(zip(rgb_images, scales)):
            keep = batch_index == image
            if self.score_threshold is not None:
                keep &= scores >= self.score_threshold
            order = np.argsort(-scores[keep], kind="stable")
            image_boxes = boxes[keep][order].astype(np.float32) / np.float32(scale)
            limits = np.asarray([rgb.shape[1], rgb.shape[0], rgb.shape[1], rgb.shape[0]], np.float32)
            image_boxes = np.minimum(np.maximum(image_boxes, 0), limits)
            labels = classes[keep][order].astype(np.int64)
            results.append({"boxes": image_boxes.reshape(-1, 4), "scores": scores[keep][order].astype(np.float32),
                            "labels": labels, "names": [self.class_names[i] for i in labels.tolist()],
                            "category_ids": self.category_ids[labels]})
        return results

    def predict(self, images: ImageInput | Iterable[ImageInput], bgr: bool = True,
                batch_size: int = 8) -> list[dict[str, Any]]:
        """Detect objects in images of any size; same inputs and result dicts as ``effdet.Predictor.predict``
        (paths, or numpy images in BGR unless ``bgr=False``; boxes xyxy in each image's own pixels)."""
        single = isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3))
        items = [images] if single else list(images)
        rgb = [load_image(i) if isinstance(i, (str, os.PathLike)) else to_rgb(i, bgr=bgr) for i in items]
        results: list[dict[str, Any]] = []
        for start in range(0, len(rgb), batch_size):
            results.extend(self.predict_rgb(rgb[start:start + batch_size]))
        return results
