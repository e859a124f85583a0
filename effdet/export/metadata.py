"""The metadata an exported file carries under :data:`METADATA_KEY` (JSON): class names, category ids, mean/std,
input size, the model config, the graph form and the post-processing settings."""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Sequence

from ..modeling.postprocess_settings import PostprocessSettings
from ..modeling.variants import ModelConfig
from ..runtime.sessions import METADATA_KEY  # defined in the torch-free runtime, which reads it

__all__ = ["METADATA_KEY", "build_metadata", "read_metadata"]


def build_metadata(config: ModelConfig, image_size: Sequence[int], output_form: str,
                   class_names: Sequence[str], category_ids: Sequence[int], settings: PostprocessSettings,
                   half: bool, level_names: Sequence[str]) -> dict[str, Any]:
    return {
        "format_version": 1,
        "outputs": output_form,
        "model": config.name,
        "config": dict(config.to_dict(), image_size=[int(s) for s in image_size]),
        "image_size": [int(s) for s in image_size],
        "mean": [float(v) for v in config.mean],
        "std": [float(v) for v in config.std],
        "class_names": [str(n) for n in class_names],
        "category_ids": [int(c) for c in category_ids],
        "postprocess": dataclasses.asdict(settings) | ({"nms": "hard"} if output_form == "detections" else {}),
        "levels": list(level_names),
        "half": bool(half),
    }


def read_metadata(path_or_model: Any) -> dict[str, Any]:
    """The :data:`METADATA_KEY` JSON of an exported file (path, bytes or ``onnx.ModelProto``)."""
    import onnx

    model = path_or_model
    if not hasattr(model, "metadata_props"):
        model = onnx.load(str(path_or_model), load_external_data=False)
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise ValueError(f"'{path_or_model}' has no '{METADATA_KEY}' metadata: was it written by effdet.export?")
