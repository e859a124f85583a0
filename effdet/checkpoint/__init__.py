"""Checkpoints: safe file I/O (:mod:`.io`), foreign formats and key maps (:mod:`.formats`), our own entries
(:mod:`.fields`, one definition) and loading into models / pretrained backbones (:mod:`.load`)."""
from .fields import (
    EXPORT_FORMAT_TAG, FORMAT_VERSION, UnsupportedFormatVersionError, export_dict, lightning_checkpoint_fields,
    save_weights,
)
from .formats import (
    FORMAT_EXPORT, FORMAT_LIGHTNING, UnknownCheckpointFormatError, convert_state_dict, detect_format, infer_backbone,
    infer_detector_config,
)
from .io import MissingPackageError, UntrustedCheckpointError, load_checkpoint, write_checkpoint
from .backbone import PACKAGED_BACKBONES, load_pretrained_backbone, packaged_weights_path
from .load import CheckpointInfo, LoadReport, WeightsMismatchError, config_for_checkpoint, load_weights, read_weights

__all__ = [
    "CheckpointInfo", "EXPORT_FORMAT_TAG", "FORMAT_EXPORT", "FORMAT_LIGHTNING", "FORMAT_VERSION", "LoadReport", "MissingPackageError",
    "PACKAGED_BACKBONES", "UnknownCheckpointFormatError", "UnsupportedFormatVersionError", "UntrustedCheckpointError",
    "WeightsMismatchError", "config_for_checkpoint", "convert_state_dict", "detect_format", "export_dict",
    "infer_backbone", "infer_detector_config", "lightning_checkpoint_fields", "load_checkpoint",
    "load_pretrained_backbone", "load_weights", "packaged_weights_path", "read_weights", "save_weights",
    "write_checkpoint",
]
