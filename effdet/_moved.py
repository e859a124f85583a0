"""Old module paths of effdet, from before its modules were sorted into rooms named after their job (issue 22):
:mod:`effdet.modeling`, :mod:`effdet.ops`, :mod:`effdet.engine`, :mod:`effdet.evaluation`, :mod:`effdet.inference`,
:mod:`effdet.export`; and then the shared pre-processing to :mod:`effdet.data.preprocess`, the post-processing settings to
:mod:`effdet.modeling.postprocess_settings`, drawing boxes to :mod:`effdet.data.visualize` and the α·β·γ search to
:mod:`effdet.engine.scaling_search`, so that training never imports inference. They keep working for one release.

One table, :data:`MOVED_MODULES` (old path -> new path; a package's entry covers its submodules), and one import
hook: :func:`install` (called by ``effdet/__init__.py``) puts a meta-path finder first on ``sys.meta_path`` that
answers an old path with the module object of the new one, and warns (``DeprecationWarning``) once per old path. So
``import effdet.loss`` / ``from effdet.training import DetectionModule`` give the new modules, and pickles that name
an old module path still load. Three old modules became packages of the same name (``effdet.inference``,
``effdet.export``, ``effdet.evaluation``); their ``__init__`` re-exports what the old module offered with
:func:`lazy_exports`, which warns for the names that moved to another room (``effdet.inference.anchors_for``).

Standard library only: ``import effdet`` stays cheap, and the torch-free runtime may import it.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from typing import Any, Callable, Mapping, Optional

__all__ = ["MOVED_MODULES", "install", "lazy_exports", "new_location"]

_UNTIL = "it keeps working until the next release"

# old module path -> its new path (the module object that an import of the old path gives)
MOVED_MODULES: dict[str, str] = {
    # modeling: the network, anchors, matcher, loss, decode, factory, compound scaling, classifier
    "effdet.variants": "effdet.modeling.variants",
    "effdet.bifpn": "effdet.modeling.bifpn",
    "effdet.model": "effdet.modeling.model",
    "effdet.anchors": "effdet.modeling.anchors",
    "effdet.assign": "effdet.modeling.assign",
    "effdet.loss": "effdet.modeling.loss",
    "effdet.factory": "effdet.modeling.factory",
    "effdet.classifier": "effdet.modeling.classifier",
    "effdet.scaling": "effdet.modeling.scaling",
    # ops: box maths, NMS
    "effdet.boxes": "effdet.ops.boxes",
    "effdet.postprocess": "effdet.ops.nms",
    # engine: config schema, training, the run directory, the anchor check
    "effdet.schema": "effdet.engine.schema",
    "effdet.training": "effdet.engine",  # split into engine/module.py, datamodule.py, ema.py, schedules.py, rng.py
    "effdet.runner": "effdet.engine.runner",
    "effdet.anchor_fit": "effdet.engine.anchor_fit",
    "effdet.host_syncs": "effdet.engine.host_syncs",
    # evaluation (effdet.evaluation itself is now the package)
    "effdet.cocoeval": "effdet.evaluation.cocoeval",
    "effdet.metrics": "effdet.evaluation.metrics",
    "effdet.analysis": "effdet.evaluation.analysis",
    # inference (effdet.inference itself is now the package)
    "effdet.preprocess": "effdet.data.preprocess",
    "effdet.postprocess_settings": "effdet.modeling.postprocess_settings",
    "effdet.predictor": "effdet.inference.predictor",
    "effdet.annotate": "effdet.inference.annotate",
    "effdet.visualize": "effdet.data.visualize",
    "effdet.runtime_network": "effdet.inference.runtime_network",
    "effdet.backends": "effdet.inference.runtime_network",  # an older name still (its names: runtime_network)
    # export (effdet.export itself is now the package)
    "effdet.quantization": "effdet.export.quantize",
    # training never calls into inference, modeling never into engine (issue 22, "follow the data"): the shared
    # pre-processing went below both, the post-processing settings next to decode, the search that trains to engine
    "effdet.inference.preprocess": "effdet.data.preprocess",
    "effdet.inference.settings": "effdet.modeling.postprocess_settings",
    "effdet.inference.visualize": "effdet.data.visualize",  # drawing boxes: the data checks and the run's figures too
    "effdet.modeling.scaling.search": "effdet.engine.scaling_search",
    "effdet.scaling.search": "effdet.engine.scaling_search",  # (else effdet.scaling's entry: a path that moved again)
}

# names that left a module (or the package that took an old module's path) for another room: the module that
# still answers for them -> {name: the module that defines it now}; getting one warns once
MOVED_NAMES: dict[str, dict[str, str]] = {
    "effdet.inference": {"anchors_for": "effdet.modeling.anchors", "detect_batch": "effdet.modeling.decode",
                         "valid_image_sizes": "effdet.modeling.decode", "_decode": "effdet.modeling.decode"},
    "effdet.export": {"_NonMaxSuppression": "effdet.ops.nms"},
    "effdet.modeling.anchors": {"BoxCoder": "effdet.ops.box_coder", "ENCODE_EPS": "effdet.ops.box_coder"},
    "effdet.checkpoint.load": {name: "effdet.checkpoint.backbone" for name in (
        "PACKAGED_BACKBONES", "PACKAGED_BACKBONE_MEAN", "PACKAGED_BACKBONE_STD", "load_pretrained_backbone",
        "packaged_weights_path")},
}

_warned: set[str] = set()


def new_location(fullname: str) -> Optional[str]:
    """The new path of an old module path (or of a submodule of an old package path), else None."""
    if fullname in MOVED_MODULES:
        return MOVED_MODULES[fullname]
    head, _, tail = fullname.rpartition(".")
    while head:
        if head in MOVED_MODULES:
            return f"{MOVED_MODULES[head]}.{fullname[len(head) + 1:]}"
        head, _, tail = head.rpartition(".")
    return None


def _stacklevel() -> int:
    """The ``stacklevel`` for ``warnings.warn`` in :func:`_warn_once` that names what imported the old path: the
    first frame outside this module, ``importlib`` and the lazy ``effdet/__init__.py``. (``warnings`` itself skips
    the frames of the import system, ``importlib._bootstrap``, without counting them.)"""
    frame, level = sys._getframe(2), 2
    while frame is not None:
        name = frame.f_code.co_filename
        if "importlib" in name and "_bootstrap" in name:
            frame = frame.f_back
            continue
        if name not in (__file__, importlib.__file__) and frame.f_globals.get("__name__") != "effdet":
            return level
        frame, level = frame.f_back, level + 1
    return 1


def _warn_once(old: str, new: str) -> None:
    if old in _warned:
        return
    _warned.add(old)
    warnings.warn(f"{old} is deprecated ({_UNTIL}); use {new}", DeprecationWarning, stacklevel=_stacklevel())


class _MovedSpec(importlib.machinery.ModuleSpec):
    """The spec of an old path: its package (``parent``) is the new module's, so that the new module's relative
    imports resolve when ``python -m OLD.PATH`` runs its code (runpy sets ``__package__`` from the spec)."""

    def __init__(self, name: str, loader: Any, new: str) -> None:
        super().__init__(name, loader)
        self.new = new

    @property
    def parent(self) -> str:
        return self.new.rpartition(".")[0]


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old module path with the module object of its new path (imported on demand)."""

    def __init__(self) -> None:
        self._specs: dict[str, Any] = {}

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        new = new_location(fullname)
        if new is None:
            return None
        return _MovedSpec(fullname, self, new)

    def create_module(self, spec: Any) -> Any:
        new = new_location(spec.name)
        module = importlib.import_module(new)
        self._specs[spec.name] = module.__spec__  # the import system overwrites it with the old path's spec
        _warn_once(spec.name, new)
        return module

    def get_code(self, fullname: str) -> Any:
        """The new module's code (``python -m OLD.PATH`` runs it, with the new module's package)."""
        new = new_location(fullname)
        return importlib.util.find_spec(new).loader.get_code(new)

    def exec_module(self, module: Any) -> None:
        for old, spec in list(self._specs.items()):
            if spec is not None and spec.name == module.__name__:
                module.__spec__ = spec  # the module stays what it is (reload, pickling): only its old name is added
                del self._specs[old]


_FINDER = _MovedModuleFinder()


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once): before the path finder, which would otherwise load a
    second copy of a moved package's submodule under its old name."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def lazy_exports(package: str, exports: Mapping[str, str] = {},
                 fallback: Optional[str] = None) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for a module that offers names of other modules on first use (PEP 562), and the
    names :data:`MOVED_NAMES` lists for it (with a warning).

    Args:
        package: the module's ``__name__``.
        exports: name -> the module that defines it (relative to ``package``, e.g. ``".settings"``, or absolute).
        fallback: a module (as in ``exports``) asked for any other name (the module whose content this path had).
    """
    moved = MOVED_NAMES.get(package, {})

    def __getattr__(name: str) -> Any:
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
            setattr(sys.modules[package], name, value)
            return value
        if name in moved:
            _warn_once(f"{package}.{name}", f"{moved[name]}.{name}")
            return getattr(importlib.import_module(moved[name]), name)
        if fallback is not None and not name.startswith("__"):
            module = importlib.import_module(fallback, package)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return __getattr__, __dir__
