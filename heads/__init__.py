"""Class and box prediction nets shared across pyramid levels."""
from .prediction import PredictionHead, box_head, class_head

__all__ = ["PredictionHead", "box_head", "class_head"]
