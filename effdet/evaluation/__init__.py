"""COCO evaluation: the report (:mod:`.report`: ``CocoEvaluator``, ``evaluate``, ``evaluate_coco``), the one
COCOeval run (:mod:`.cocoeval`), stat keys, tables and ``metrics.json`` (:mod:`.metrics`), and the error analysis
with its plots (:mod:`.analysis`).

``effdet.evaluation`` was a module before (issue 22): every name it had still comes from here, loaded from
:mod:`.report` on first use.
"""
from __future__ import annotations

from .._moved import lazy_exports

_EXPORTS = {
    "CocoEvaluator": ".report", "evaluate": ".report", "evaluate_coco": ".report", "detect": ".report",
    "category_warnings": ".report", "detections_to_coco_results": ".report", "save_metrics": ".report",
    "STAT_KEYS": ".metrics", "evaluate_results": ".cocoeval", "load_coco_gt": ".cocoeval",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, fallback=".report")
