"""The official figures (EfficientDet paper and the official implementation): one table used by the model
benchmark and the model tests. Parameters in millions at 90 classes; multiply-adds in billions (the paper's
"FLOPs"); COCO val AP."""
from __future__ import annotations

from typing import NamedTuple, Optional


class Official(NamedTuple):
    params_m: float
    macs_b: Optional[float]
    coco_ap: float


OFFICIAL: dict[str, Official] = {
    "efficientdet_d0": Official(3.9, 2.54, 34.3), "efficientdet_d1": Official(6.6, 6.10, 40.2),
    "efficientdet_d2": Official(8.1, 11.0, 43.5), "efficientdet_d3": Official(12.0, 24.9, 46.8),
    "efficientdet_d4": Official(20.7, 55.2, 49.3), "efficientdet_d5": Official(33.7, 130, 51.2),
    "efficientdet_d6": Official(51.9, 226, 52.1), "efficientdet_d7": Official(51.9, 325, 53.4),
    "efficientdet_d7x": Official(77.0, 410, 54.4),
    "efficientdet_lite0": Official(3.2, None, 26.4), "efficientdet_lite1": Official(4.2, None, 31.5),
    "efficientdet_lite2": Official(5.3, None, 35.1), "efficientdet_lite3": Official(8.4, None, 38.8),
    "efficientdet_lite3x": Official(9.3, None, 42.6), "efficientdet_lite4": Official(15.1, None, 43.2),
}

__all__ = ["OFFICIAL", "Official"]
