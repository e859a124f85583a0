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
from ..modeling.postprocess_settings import PostprocessSettings, check_graph_settings, make_postprocess_settings
from ..ops.slicing import detect_images
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
        postprocess: post-processing overrides (``slice_size=640``, ``merge="nmm"``, ``max_detections=50`` ...;
            strings are converted as on the command line) on the settings stored at export (the metadata's
            ``postprocess``). Sliced inference (``slice_size`` ... ``slice_batch_size``, see
            :mod:`effdet.ops.slicing`) runs around the graph and can be set freely; what the graph fixed at
            export (its NMS, thresholds) cannot be changed (``ValueError``), and ``max_detections`` can only fall.

    Attributes:
        image_size: network input (h, w); class_names, category_ids, mean, std: from the file's metadata.
        settings: the post-processing in use (:class:`~effdet.modeling.postprocess_settings.PostprocessSettings`): the export's
            with ``postprocess`` applied. With ``settings.slice_size`` set, images with a longer side are detected
            slice by slice (in batches of ``slice_batch_size`` slices) and the slices' detections merged.
    """

    def __init__(self, path: PathLike, runtime: str = "onnxruntime", threads: int | None = None,
                 score_threshold: float | None = None, *, backend: str | None = None, **postprocess: Any):
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
        exported = make_postprocess_settings(meta.get("postprocess"), {})
        self.settings: PostprocessSettings = make_postprocess_settings(exported, postprocess)
        check_graph_settings(path, exported, self.settings)
        self._graph_max_detections = exported.max_detections

    def preprocess(self, rgb_images: Sequence[np.ndarray]) -> tuple[dict[str, np.ndarray], list[float]]:
        """RGB uint8 images -> graph feed (``images`` normalised ``[B, 3, H, W]``, ``image_sizes`` ``[B, 2]``
        valid area in network pixels) and the letterbox scales."""
        return prepare_batch(rgb_images, self.image_size, self.metadata["mean"], self.metadata["std"])

    def detect_rgb(self, rgb_images: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Whole images through the graph, never sliced: per image ``boxes`` float32 ``[K, 4]`` xyxy in its pixels,
        ``scores`` ``[K]`` (decreasing), ``labels`` int64 ``[K]``. The function sliced inference runs on each batch
        of slices."""
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
            if self.settings.max_detections < self._graph_max_detections:
                order = order[:self.settings.max_detections]
            image_boxes = boxes[keep][order].astype(np.float32) / np.float32(scale)
            limits = np.asarray([rgb.shape[1], rgb.shape[0], rgb.shape[1], rgb.shape[0]], np.float32)
            image_boxes = np.minimum(np.maximum(image_boxes, 0), limits)
            results.append({"boxes": image_boxes.reshape(-1, 4), "scores": scores[keep][order].astype(np.float32),
                            "labels": classes[keep][order].astype(np.int64)})
        return results

    def predict_rgb(self, rgb_images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """One batch of RGB uint8 images -> detections (see :meth:`predict`); images larger than
        ``settings.slice_size`` (when set) slice by slice (:func:`effdet.ops.slicing.detect_images`)."""
        results = []
        for found in detect_images(list(rgb_images), self.detect_rgb, self.settings):
            labels = np.asarray(found["labels"], np.int64)
            results.append({"boxes": np.asarray(found["boxes"], np.float32).reshape(-1, 4),
                            "scores": np.asarray(found["scores"], np.float32), "labels": labels,
                            "names": [self.class_names[i] for i in labels.tolist()],
                            "category_ids": self.category_ids[labels]})
        return results

    def predict(self, images: ImageInput | Iterable[ImageInput], bgr: bool = True,
                batch_size: int = 8) -> list[dict[str, Any]]:
        """Detect objects in images of any size; same inputs and result dicts as ``effdet.Predictor.predict``
        (paths, or numpy images in BGR unless ``bgr=False``; boxes xyxy in each image's own pixels). Large images
        slice by slice when ``settings.slice_size`` is set (the export's, or the ``slice_size=`` given here)."""
        single = isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3))
        items = [images] if single else list(images)
        results: list[dict[str, Any]] = []
        for start in range(0, len(items), batch_size):  # images are read one batch at a time
            rgb = [load_image(i) if isinstance(i, (str, os.PathLike)) else to_rgb(i, bgr=bgr)
                   for i in items[start:start + batch_size]]
            results.extend(self.predict_rgb(rgb))
        return results
