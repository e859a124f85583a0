"""Checkpoint files: safe reading (``torch.load(weights_only=True)`` or safetensors) and atomic writing.

Nothing here knows what the entries mean; :mod:`effdet.checkpoint.fields` defines our own entries and
:mod:`effdet.checkpoint.load` turns any supported checkpoint into weights and a config.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from ..fileio import atomic_path
from ..types import PathLike

logger = logging.getLogger("effdet.checkpoint")


class MissingPackageError(ImportError):
    """An optional package that a file or a setting needs is not installed; the message says what to install."""


class UntrustedCheckpointError(RuntimeError):
    """The file needs arbitrary unpickling (it contains Python objects other than tensors and plain containers)."""


def _untrusted_message(path: str, detail: str) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", detail)
    what = f" (it references the Python object `{found.group(1)}`)" if found else ""
    return (
        f"refusing to load '{path}': it cannot be read as plain weights{what}. Files like this are loaded by "
        "unpickling, and unpickling can run any code the file's author put in it (it is not just data). "
        "If you trust where the file comes from, pass trust=True (effdet.checkpoint.load_checkpoint / load_weights, "
        "or create_model(..., trust_checkpoint=True)) or --trust-checkpoint on the command line. Better: convert "
        "it once with `python tools/convert_weights.py SRC DST --trust-checkpoint` and use DST, which loads "
        "safely."
    )


def load_checkpoint(path: PathLike, trust: bool = False, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint file into a dict without running code from it.

    ``.safetensors`` files are read with the ``safetensors`` package (their metadata may hold our export's
    ``model_config``/``class_names``/``category_ids`` as JSON). Anything else goes through
    ``torch.load(weights_only=True)``, which only rebuilds tensors and plain containers (``argparse.Namespace``
    is also allowed: the reference's training script stores its arguments that way). A file that needs other
    Python objects raises :class:`UntrustedCheckpointError` explaining the risk, unless ``trust=True``, which
    unpickles it fully (a pickled ``nn.Module`` then becomes its ``state_dict()``).

    ``map_location`` defaults to the CPU so that files saved on a GPU open anywhere; ``load_state_dict`` then
    copies the tensors to the model's device.
    """
    path = os.fspath(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint '{path}' does not exist (or is not a file)")
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    try:
        with _extra_safe_globals():
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        needs_objects = "GLOBAL " in text or "Unsupported global" in text
        if not needs_objects and not _looks_like_torch_file(path):
            raise ValueError(f"'{path}' is not a readable PyTorch checkpoint (neither a torch zip archive nor a "
                             "pickle; truncated or another file type?)") from error
        if not trust:
            raise UntrustedCheckpointError(_untrusted_message(path, text)) from None
        logger.warning("loading '%s' with full unpickling (trust=True): it can run code from the file", path)
        obj = torch.load(path, map_location=map_location, weights_only=False)
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise ValueError(f"'{path}' holds a {type(obj).__name__}, not a dict of weights")
    return dict(obj)


def _extra_safe_globals() -> contextlib.AbstractContextManager:
    """Allow ``argparse.Namespace`` (a plain attribute bag) in weights-only loading, where torch supports it."""
    allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
    return allow([argparse.Namespace]) if allow is not None else contextlib.nullcontext()


def _looks_like_torch_file(path: str) -> bool:
    """A torch.save zip archive or a legacy pickle (starts with the PROTO opcode)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def _load_safetensors(path: str) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` file; with metadata (written by :func:`write_checkpoint`) the file's
    top-level entries are restored as ``{**metadata, "state_dict": tensors}``."""
    try:
        from safetensors import safe_open
        from safetensors.torch import load_file
    except ImportError:
        raise MissingPackageError(f"reading '{path}' needs the safetensors package: pip install safetensors") from None
    tensors = load_file(path)
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata() or {}
    if not metadata:
        return tensors
    entries: dict[str, Any] = {}
    for key, text in metadata.items():
        try:
            entries[key] = json.loads(text)
        except ValueError:  # a plain string
            entries[key] = text
    entries["state_dict"] = tensors
    return entries


def write_checkpoint(path: PathLike, payload: Mapping[str, Any]) -> Path:
    """Write a checkpoint dict atomically (see :mod:`effdet.fileio`): ``torch.save`` of ``payload``, or for a
    ``.safetensors`` path its ``state_dict`` tensors with every other entry as JSON metadata."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        metadata = {k: json.dumps(v) for k, v in payload.items() if k != "state_dict"}
        with atomic_path(path) as tmp:
            save_file(dict(payload["state_dict"]), str(tmp), metadata=metadata)
    else:
        with atomic_path(path) as tmp:
            torch.save(dict(payload), tmp)
    return path


__all__ = ["MissingPackageError", "UntrustedCheckpointError", "load_checkpoint", "write_checkpoint"]
