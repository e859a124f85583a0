"""Old forms that keep working for one release, and the one message each gives (no torch: the runtime uses it).

* command-line forms (a flag, an override grammar, a module run with ``-m``): :func:`deprecated_form` logs a
  warning through the ``effdet.deprecation`` logger, which the tools print;
* a renamed keyword argument, attribute or constant of the API: :func:`renamed_keyword` and
  :func:`deprecated_name` raise a ``DeprecationWarning``.
"""
from __future__ import annotations

import logging
import warnings
from typing import Any

logger = logging.getLogger("effdet.deprecation")

__all__ = ["deprecated_form", "deprecated_name", "renamed_keyword"]

_UNTIL = "it keeps working until the next release"


def deprecated_form(old: str, new: str) -> None:
    """Log that the command-line form ``old`` is deprecated and what to write instead."""
    logger.warning(f"{old} is deprecated ({_UNTIL}); use {new}")


def renamed_keyword(owner: str, old: str, old_value: Any, new: str, new_value: Any, default: Any) -> Any:
    """The value of a keyword argument renamed from ``old`` to ``new`` in ``owner``: the new one's, or the old one's
    (with a ``DeprecationWarning``) when only that was given; both given is a ``TypeError``. ``old_value`` None means
    "not given"; ``new_value`` equal to ``default`` too."""
    if old_value is None:
        return new_value
    if new_value != default and new_value != old_value:
        raise TypeError(f"{owner}() got both {new}={new_value!r} and its deprecated name {old}={old_value!r}")
    warnings.warn(f"{owner}({old}=...) is deprecated ({_UNTIL}); use {new}={old_value!r}", DeprecationWarning,
                  stacklevel=3)
    return old_value


def deprecated_name(old: str, new: str) -> None:
    """Warn (``DeprecationWarning``, at the caller's caller) that the attribute or constant ``old`` is now ``new``."""
    warnings.warn(f"{old} is deprecated ({_UNTIL}); use {new}", DeprecationWarning, stacklevel=3)
