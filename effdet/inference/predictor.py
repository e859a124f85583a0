"""Use a trained detector: load a checkpoint, run it on images of any size, get boxes in original pixels.

    predictor = Predictor.from_checkpoint("runs/demo/checkpoints/best.ckpt")
    results = predictor.predict(["a.jpg", cv2.imread("b.png")])   # paths and/or BGR numpy images
    results[0]["boxes"], results[0]["scores"], results[0]["labels"], results[0]["names"]

Everything a prediction needs comes from the checkpoint (written by
``effdet.engine.module.DetectionModule.on_save_checkpoint``; other detector formats via ``effdet.checkpoint``): the model
config (architecture, input size, normalisation), the EMA weights, the class names and dataset category
ids, and the post-processing settings of the training config's ``eval`` section (overridable).

Images are letterboxed with :func:`effdet.data.preprocess.letterbox` (top-left, mean-colour padding) exactly
as validation does, and decoded by :func:`effdet.modeling.decode.detect_batch`, the step validation uses, so
``tools/eval.py`` reproduces the val AP training logged.
"""
from __future__ import annotations

import copy
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from backbones.layers import fuse_batchnorm

from ..data.sources import iter_batches
from ..deprecation import deprecated_name, renamed_keyword
from ..imageinfo import exif_orientation_setting
from ..modeling.decode import detect_batch
from ..modeling.model import EfficientDet
from ..modeling.postprocess_settings import (GRAPH_FIXED_SETTINGS, PostprocessSettings, check_graph_settings,
                                             check_settings, make_postprocess_settings)
from ..data.preprocess import ImageReadError, fill_from_mean, letterbox_batch, load_image, to_rgb
from ..ops.slicing import detect_images, detections_on_host
from ..runtime.sessions import ONNX_RUNTIMES, check_runtime, open_session
from ..types import ImageInput, PathLike
from ..modeling.variants import ModelConfig

__all__ = [
    "GRAPH_FIXED_SETTINGS",
    "Predictor",
    "check_graph_settings",
    "load_predictor",
    "make_postprocess_settings",
    "parse_overrides",
    "read_checkpoint",
]

DEFAULT_BATCH_SIZE = 8


# ------------------------------------------------------------------------------------------ checkpoints


def read_checkpoint(path: PathLike, trust: bool = False) -> dict[str, Any]:
    """Read a checkpoint file into a plain dict without running code from it, on the CPU.

    The ONE place the predictor reads checkpoint files: it uses ``effdet.checkpoint.load_checkpoint``
    (``torch.load(weights_only=True)``, or safetensors; files that need full unpickling are refused unless
    ``trust``: only for files from a source you trust, they can run code when loaded).
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file that is not a safe checkpoint.
    """
    from ..checkpoint import UntrustedCheckpointError, load_checkpoint

    try:
        return load_checkpoint(path, trust=trust)
    except UntrustedCheckpointError as error:
        raise ValueError(str(error)) from None
    except (FileNotFoundError, ValueError):
        raise
    except Exception as error:  # RuntimeError (not a zip / pickle file), EOFError (truncated) ...
        raise ValueError(
            f"cannot read checkpoint '{path}' ({type(error).__name__}: {str(error).splitlines()[0]}); is it a "
            "complete checkpoint written by tools/train.py or tools/convert_weights.py?") from None


def _describe_checkpoint(checkpoint: dict[str, Any], path: PathLike) -> dict[str, Any]:
    """What a predictor needs from a checkpoint: ``config``, ``state``, ``weights`` (ema|model|<format>),
    ``class_names``, ``category_ids`` (None when not stored) and ``train_config`` (None when not stored).

    Every detector format goes through ``effdet.checkpoint.read_weights`` (our Lightning ``.ckpt`` with its EMA
    weights preferred, our plain export, converted or reference checkpoints).
    """
    from ..checkpoint import FORMAT_LIGHTNING, config_for_checkpoint, read_weights
    from ..checkpoint.fields import TRAIN_CONFIG_KEY

    try:
        info = read_weights(checkpoint)
        config = config_for_checkpoint(info) if info.is_detector else None
    except ValueError as error:
        raise ValueError(f"'{path}': {error}") from None
    if config is None:
        raise ValueError(
            f"'{path}' holds {info.describe()} weights, not a detector. Use a checkpoint written by "
            "tools/train.py (runs/<name>/checkpoints/best.ckpt) or a converted detector (tools/convert_weights.py)")
    train_config = checkpoint.get(TRAIN_CONFIG_KEY)
    kind = "ema" if info.used_ema else ("model" if info.format == FORMAT_LIGHTNING else info.format)
    return {"config": config, "state": dict(info.state_dict), "weights": kind, "class_names": info.class_names,
            "category_ids": info.category_ids,
            "train_config": dict(train_config) if isinstance(train_config, Mapping) else None}


# ------------------------------------------------------------------------------ post-processing settings


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["eval.nms=hard", "eval.score_threshold=0.05"]`` -> ``{"nms": "hard", "score_threshold": "0.05"}``: the
    post-processing overrides of a command line, read by the parser every command uses
    (:func:`effdet.engine.schema.postprocess_options`; ``nms=hard``, the old form, is accepted with a deprecation message).
    Values stay strings; :func:`make_postprocess_settings` converts and validates them."""
    from ..engine.schema import postprocess_options

    return postprocess_options(items, "parse_overrides")[0]


# ------------------------------------------------------------------------------------------- predictor


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _is_single_image(images: Any) -> bool:
    return isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3))


class Predictor:
    """A trained EfficientDet ready to run on images of any size.

    Args:
        model: an :class:`~effdet.modeling.model.EfficientDet` (anything with ``.config`` and the same forward);
            moved to ``device`` and put in eval mode.
        class_names: name of each label ``0..C-1``.
        category_ids: dataset category id of each label (default ``1..C``, the COCO convention).
        settings: post-processing (default: the paper's evaluation settings).
        device: where to run (default: the model's device).

    Attributes:
        image_size: network input ``[height, width]``; every image is letterboxed to it.
        fill: RGB padding colour of the letterbox (the rounded normalisation mean, as in validation).
        train_config: the training config stored in the checkpoint (``from_checkpoint``), else None.
        exif_orientation: how image files are read (``load_image``): ``"apply"`` (as displayed, the default) or
            the checkpoint's ``data.exif_orientation``.
    """

    def __init__(
        self,
        model: nn.Module,
        class_names: Sequence[str],
        category_ids: Sequence[int] | None = None,
        settings: PostprocessSettings | None = None,
        device: str | torch.device | None = None,
        fuse_bn: bool = True,
    ) -> None:
        config: ModelConfig = model.config
        if not isinstance(model, nn.Module):  # an ONNX runtime (effdet.inference.runtime_network.RuntimeNetwork): on the host
            device, fuse_bn = "cpu", False
        if len(class_names) != config.num_classes:
            raise ValueError(f"{len(class_names)} class names for a model with {config.num_classes} classes")
        if category_ids is None:
            category_ids = list(range(1, config.num_classes + 1))
        if len(category_ids) != config.num_classes:
            raise ValueError(f"{len(category_ids)} category ids for a model with {config.num_classes} classes")
        if device is None:
            parameter = next(model.parameters(), None)
            device = parameter.device if parameter is not None else _default_device()
        self.device = torch.device(device)
        # Inference copy: batch norms folded into their convs (``fuse_bn``; the caller's model is untouched) and
        # channels-last convolutions, which run 1.3-1.6x faster on CPU (and suit tensor cores on GPU).
        if isinstance(model, nn.Module):
            model = copy.deepcopy(model).eval()
            if fuse_bn:
                fuse_batchnorm(model)
            model = model.to(self.device, memory_format=torch.channels_last)
        self.model = model
        self.runtime: str = "torch" if isinstance(model, nn.Module) else model.runtime
        self.config = config
        self.class_names = [str(n) for n in class_names]
        self.category_ids = [int(c) for c in category_ids]
        self.settings = settings if settings is not None else PostprocessSettings()
        check_settings(self.settings)
        self.image_size = [int(s) for s in config.image_size]
        self.fill = fill_from_mean(config.mean)
        self.train_config: dict[str, Any] | None = None
        self.exif_orientation = "apply"
        self.checkpoint_path: str | None = None
        self.weights_kind = "given"

    @classmethod
    def from_checkpoint(
        cls,
        path: PathLike,
        device: str | torch.device | None = None,
        fuse_bn: bool = True,
        runtime: str = "torch",
        threads: int | None = None,
        trust_checkpoint: bool = False,
        *,
        backend: str | None = None,
        **postprocess_overrides: Any,
    ) -> Predictor:
        """Load a self-describing checkpoint (``best.ckpt`` / ``last.ckpt`` of ``tools/train.py``).

        Uses the EMA weights when present (else the raw ones), the stored class names and category ids,
        and the post-processing of the stored training config's ``eval`` section; keyword arguments
        override it (``score_threshold=0.3``, ``nms="hard"``, ``hflip_tta=True`` ...; unknown names fail
        listing the valid ones). ``device`` defaults to CUDA when available, else the CPU. ``fuse_bn``: fold
        batch norms into convs for speed (same outputs up to float rounding). ``runtime``: ``"torch"``, or
        ``"onnxruntime"`` / ``"openvino"`` / ``"openvino-bf16"`` (the model is exported to ONNX on the fly, see
        :mod:`effdet.inference.runtime_network`; ``threads`` sets their CPU threads; ``backend`` is the deprecated name of
        ``runtime``). ``trust_checkpoint`` allows files that need full unpickling (they can run code: only for files
        from a source you trust).
        """
        runtime = check_runtime(renamed_keyword("Predictor.from_checkpoint", "backend", backend, "runtime", runtime,
                                                "torch"))
        make_postprocess_settings(None, postprocess_overrides)  # bad option names fail before the file is read
        described = _describe_checkpoint(read_checkpoint(path, trust=trust_checkpoint), path)
        config: ModelConfig = described["config"]
        train_config = described["train_config"]
        eval_section = train_config.get("eval") if train_config else None
        settings = make_postprocess_settings(eval_section, postprocess_overrides)
        model = EfficientDet(config)
        missing, unexpected = model.load_state_dict(described["state"], strict=False)
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing or unexpected:
            raise ValueError(
                f"checkpoint '{path}' does not fit its own model config ({config.name}): {len(missing)} missing "
                f"keys (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        category_ids = described["category_ids"] or list(range(1, config.num_classes + 1))
        class_names = described["class_names"] or [str(c) for c in category_ids]
        if runtime != "torch":
            from .runtime_network import network_for_runtime

            model = network_for_runtime(model.eval(), runtime, threads=threads, class_names=class_names,
                                        category_ids=category_ids)
        predictor = cls(model, class_names, category_ids, settings,
                        device=device if device is not None else _default_device(), fuse_bn=fuse_bn)
        predictor.train_config = train_config
        predictor.exif_orientation = exif_orientation_setting(train_config)  # images read as training read them
        predictor.checkpoint_path = str(path)
        predictor.weights_kind = described["weights"]
        return predictor

    @classmethod
    def from_onnx(cls, path: PathLike, runtime: str = "onnxruntime", threads: int | None = None, *,
                  backend: str | None = None, **postprocess_overrides: Any) -> Predictor:
        """Run a file written by ``effdet-export`` with ``runtime`` (onnxruntime, openvino, openvino-bf16;
        ``backend`` is its deprecated name).

        Class names, category ids, normalisation and input size come from the file's metadata. A raw-output
        file is decoded by the torch post-processing with the settings stored at export (overridable as in
        :meth:`from_checkpoint`); a file with NMS in the graph uses the graph's (hard NMS, its thresholds).
        """
        from .runtime_network import RuntimeNetwork

        runtime = renamed_keyword("Predictor.from_onnx", "backend", backend, "runtime", runtime, "onnxruntime")
        if runtime == "torch":
            raise ValueError(f"an ONNX file runs with one of the runtimes {list(ONNX_RUNTIMES)}, not 'torch'")
        network = RuntimeNetwork(open_session(path, runtime, threads))
        meta = network.metadata
        settings = make_postprocess_settings(meta.get("postprocess"), postprocess_overrides)
        if meta["outputs"] == "detections":
            check_graph_settings(path, make_postprocess_settings(meta.get("postprocess"), {}), settings)
        predictor = cls(network, meta["class_names"], meta["category_ids"], settings)
        predictor.checkpoint_path = str(path)
        predictor.weights_kind = f"onnx:{meta['outputs']}"
        return predictor

    def __repr__(self) -> str:
        return (f"Predictor({self.config.name}, image_size={self.image_size}, classes={len(self.class_names)}, "
                f"weights={self.weights_kind}, runtime={self.runtime}, device={self.device}, settings={self.settings})")

    @property
    def backend(self) -> str:
        """Deprecated name of :attr:`runtime`."""
        deprecated_name("Predictor.backend", "Predictor.runtime")
        return self.runtime

    # ---------------------------------------------------------------- steps

    def letterbox_batch(self, rgb_images: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """RGB uint8 ``H x W x 3`` images -> ``(images uint8 [B, 3, S_h, S_w], scales [B], orig_sizes [B, 2])``,
        letterboxed as validation does (top-left, mean-colour padding)."""
        return letterbox_batch(rgb_images, self.image_size, self.fill)

    def detect(
        self, images: torch.Tensor, scales: torch.Tensor, orig_sizes: torch.Tensor
    ) -> list[dict[str, torch.Tensor]]:
        """:func:`effdet.modeling.decode.detect_batch` on this predictor's device with its settings.

        Args:
            images: uint8 ``[B, 3, S_h, S_w]`` RGB, letterboxed (e.g. a ``collate_detection`` batch).
            scales: ``[B]`` letterbox scales. orig_sizes: ``[B, 2]`` original (height, width).
        Returns:
            per image ``{"boxes" [K, 4] xyxy original px, "scores" [K], "labels" [K] 0..C-1}`` (tensors on
            this predictor's device).
        """
        if getattr(self.model, "outputs", "raw") == "detections":  # an ONNX graph with NMS inside
            from .runtime_network import detect_with_graph

            return detect_with_graph(self.model, images, scales, orig_sizes, self.settings.score_threshold,
                                     self.settings.max_detections)
        return detect_batch(self.model, images.to(self.device, non_blocking=True), scales, orig_sizes, self.settings)

    def _to_rgb(self, image: ImageInput, bgr: bool) -> np.ndarray:
        if isinstance(image, (str, os.PathLike)):
            return load_image(image, self.exif_orientation)
        if isinstance(image, np.ndarray):
            return to_rgb(image, bgr=bgr)
        raise TypeError(f"expected an image file path or a numpy image, got {type(image).__name__}")

    def _as_numpy(self, detections: dict[str, Any]) -> dict[str, Any]:
        found = detections_on_host(detections)
        labels = found["labels"]
        return {
            **found,
            "names": [self.class_names[i] for i in labels.tolist()],
            "category_ids": np.asarray([self.category_ids[i] for i in labels.tolist()], dtype=np.int64),
        }

    def detect_rgb(self, rgb_images: Sequence[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        """Whole images, never sliced: letterbox + :meth:`detect` (per image ``boxes`` xyxy in its pixels,
        ``scores``, ``labels``; tensors). The ``detect`` function that sliced inference runs on each batch of slices."""
        if not rgb_images:
            return []
        return self.detect(*self.letterbox_batch(rgb_images))

    def predict_rgb(self, rgb_images: Sequence[np.ndarray]) -> list[dict[str, Any]]:
        """One batch of ``H x W x 3`` uint8 RGB images -> detections (see :meth:`predict`). With
        ``settings.slice_size`` set, an image with a longer side is detected slice by slice
        (:func:`effdet.ops.slicing.detect_images`)."""
        if not rgb_images:
            return []
        return [self._as_numpy(d) for d in detect_images(rgb_images, self.detect_rgb, self.settings)]

    def predict(
        self,
        images: ImageInput | Iterable[ImageInput],
        bgr: bool = True,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> list[dict[str, Any]]:
        """Detect objects in images of any size.

        Args:
            images: one image or a sequence of them; each is a file path (read with OpenCV, colour order
                handled, ``bgr`` ignored) or a numpy image ``H x W x 3`` (or ``H x W`` grey, ``H x W x 4``
                with alpha; uint8, uint16 or float). A ``[B, H, W, 3]`` array is a batch.
            bgr: channel order of numpy images: True (default) for OpenCV's BGR as ``cv2.imread`` and
                ``cv2.VideoCapture`` give, False for RGB (PIL, matplotlib, imageio).
            batch_size: images per forward pass; images are read one batch at a time.

        Images larger than ``settings.slice_size`` (when set; config ``eval.slice_size``) are detected slice by slice
        and the slices' detections merged (:mod:`effdet.ops.slicing`); the others as they are.

        Returns:
            a list with one dict per image, in input order (also for a single image):
            ``boxes`` float32 ``[K, 4]`` xyxy in the image's own pixels, ``scores`` float32 ``[K]``
            (decreasing), ``labels`` int64 ``[K]`` in ``0..C-1``, ``names`` list of ``K`` class names,
            ``category_ids`` int64 ``[K]`` (the dataset's category ids).

        Raises:
            ImageReadError: a path that is missing or not a readable image.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items: Iterable[ImageInput] = [images] if _is_single_image(images) else images
        results: list[dict[str, Any]] = []
        for batch in iter_batches((self._to_rgb(item, bgr) for item in items), batch_size):
            results.extend(self.predict_rgb(batch))
        return results


def load_predictor(weights: PathLike, runtime: str = "torch", device: Any = None,
                   **postprocess_overrides: Any) -> Predictor:
    """The Predictor the tools build: an ``.onnx`` file via ``Predictor.from_onnx`` (runtime onnxruntime unless
    openvino is asked for), any checkpoint via ``Predictor.from_checkpoint(runtime=runtime)``."""
    check_runtime(runtime)
    if str(weights).lower().endswith(".onnx"):
        return Predictor.from_onnx(weights, runtime="onnxruntime" if runtime == "torch" else runtime,
                                   **postprocess_overrides)
    return Predictor.from_checkpoint(weights, device=device, runtime=runtime, **postprocess_overrides)
