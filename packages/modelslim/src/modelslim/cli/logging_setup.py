"""Logging to stderr, level from MSMODELSLIM_LOG_LEVEL (INFO by default, or DEBUG)."""

from __future__ import annotations

import logging
import os
import sys

from modelslim_core.errors import UsageError

ENV = "MSMODELSLIM_LOG_LEVEL"
_LEVELS = {"info": logging.INFO, "debug": logging.DEBUG, "warning": logging.WARNING, "error": logging.ERROR}


def env_log_level() -> int:
    value = os.environ.get(ENV, "info").strip().lower() or "info"
    if value not in _LEVELS:
        raise UsageError(f"{ENV}={os.environ[ENV]!r} is not a log level.", "use INFO (default) or DEBUG.")
    return _LEVELS[value]


def debug_tracebacks() -> bool:
    """Tracebacks are shown only when the user asked for DEBUG logs."""
    return os.environ.get(ENV, "").strip().lower() == "debug"


def configure(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    for name in ("modelslim", "modelslim_core", "modelslim_runners", "modelslim_save_ascend", "modelslim_vlm", "modelslim_sd"):
        logging.getLogger(name).setLevel(level)
