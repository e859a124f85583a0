"""Deprecated: the old name of :mod:`effdet.runtime_network` (it holds network runtimes, which the tools, the
Predictor and the torch-free runtime call ``runtime``). Its old names keep working until the next release."""
from __future__ import annotations

from .choices import RUNTIMES as BACKENDS
from .deprecation import deprecated_name
from .runtime.sessions import check_runtime as check_backend
from .runtime_network import RuntimeNetwork as OnnxBackend
from .runtime_network import detect_with_graph
from .runtime_network import network_for_runtime as backend_from_model

__all__ = ["BACKENDS", "OnnxBackend", "backend_from_model", "check_backend", "detect_with_graph"]

deprecated_name("effdet.backends", "effdet.runtime_network (RuntimeNetwork, network_for_runtime), "
                "effdet.choices.RUNTIMES and effdet.runtime.check_runtime")
