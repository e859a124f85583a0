"""EfficientNet backbones (B0–B7, Lite0–4) returning stride 8/16/32 feature maps."""
from .efficientnet import EFFICIENTNET_VARIANTS, EfficientNet, EfficientNetSpec, create_backbone, list_backbones

__all__ = ["EFFICIENTNET_VARIANTS", "EfficientNet", "EfficientNetSpec", "create_backbone", "list_backbones"]
