"""Console logging of the command-line tools: every message once, in one format.

Lightning installs console handlers of its own (``lightning`` always; ``lightning.pytorch`` /
``lightning.fabric`` when the root logger has none yet), so with the root handler of ``logging.basicConfig``
each Lightning message was printed twice (``INFO: ...`` and ``INFO lightning.pytorch...: ...``).
:func:`setup_console_logging` keeps only the root handler, drops Lightning's advertising tips, and silences
one deprecation warning that Lightning's own code triggers inside torch (not a call of ours).
"""
from __future__ import annotations

import logging
import warnings

LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
_LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")
_TIP_PREFIX = "💡 Tip:"


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_TIP_PREFIX)


def setup_console_logging(level: int = logging.INFO, *, lightning: bool = False) -> None:
    """``logging.basicConfig`` with our format; with ``lightning=True`` also import Lightning and route its
    messages through the root handler only (call it before any Lightning message is logged)."""
    logging.basicConfig(level=level, format=LOG_FORMAT)
    if not lightning:
        return
    import lightning as _lightning  # noqa: F401  (its import installs the handlers removed here)

    for name in _LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_not_a_tip)
    # Raised inside lightning.pytorch.utilities._pytree (Lightning's use of torch's pytree), not by our calls.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")


__all__ = ["LOG_FORMAT", "setup_console_logging"]
