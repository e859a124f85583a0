"""Convert a checkpoint of any supported format into our plain export format (``tools/convert_weights.py``)."""
from __future__ import annotations

from typing import Optional

from backbones import create_backbone

from ..modeling.factory import create_model
from ..modeling.model import count_parameters
from ..types import PathLike
from .fields import save_weights
from .load import load_weights, read_weights


def convert_checkpoint(src: PathLike, dst: PathLike, variant: Optional[str] = None,
                       num_classes: Optional[int] = None, trust: bool = False) -> str:
    """Convert checkpoint ``src`` (any supported format) into our plain export ``dst`` (see
    :mod:`effdet.checkpoint.fields`); returns a one-line summary (format, variant, classes, parameters)."""
    info = read_weights(src, trust=trust)
    if info.is_detector:
        reset = num_classes is not None and num_classes != info.model_config["num_classes"]
        model = create_model(variant, num_classes=num_classes, weights=info, reset_class_head=reset)
        keep_names = not reset
        save_weights(model, dst, class_names=info.class_names if keep_names else None,
                     category_ids=info.category_ids if keep_names else None,
                     source={"format": info.format, "variant": info.variant, "file": str(src)})
        name = model.config.name
        extra = f", {model.config.num_classes} classes" + (" (class head re-initialised)" if reset else "")
    else:
        if variant or num_classes:
            raise ValueError("--variant/--num-classes apply to detector checkpoints; this is a backbone checkpoint")
        has_classifier = any(k.startswith("classifier.fc.") for k in info.state_dict)
        classes = int(info.state_dict["classifier.fc.weight"].shape[0]) if has_classifier else 0
        model = create_backbone(info.backbone, num_classes=classes)
        load_weights(model, info)
        save_weights(model, dst, source={"format": info.format, "variant": info.variant, "file": str(src)})
        name = info.backbone
        extra = f", classifier with {classes} classes" if classes else ", features only"
    ema = ", EMA weights" if info.used_ema else ""
    return (f"format: {info.format}; variant: {name}{extra}{ema}; parameters: {count_parameters(model):,}; "
            f"wrote {dst}")


__all__ = ["convert_checkpoint"]
