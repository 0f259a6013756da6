"""Logging to stderr, level from MSMODELSLIM_LOG_LEVEL (INFO by default, or DEBUG), and optionally to a file.

With `--log_file PATH` the file gets every record at DEBUG level (what a bug report needs) plus the final
failure paragraph, while the terminal keeps the chosen level.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from modelslim_core.errors import UsageError

ENV = "MSMODELSLIM_LOG_LEVEL"
_LEVELS = {"info": logging.INFO, "debug": logging.DEBUG, "warning": logging.WARNING, "error": logging.ERROR}
_FORMAT = "%(asctime)s - %(name)s - %(levelname)s - %(message)s"
_OUR_LOGGERS = ("modelslim", "modelslim_core", "modelslim_runners", "modelslim_save_ascend", "modelslim_vlm", "modelslim_sd")

_file_handler: logging.FileHandler | None = None


def env_log_level() -> int:
    value = os.environ.get(ENV, "info").strip().lower() or "info"
    if value not in _LEVELS:
        raise UsageError(f"{ENV}={os.environ[ENV]!r} is not a log level.", "use INFO (default) or DEBUG.")
    return _LEVELS[value]


def debug_tracebacks() -> bool:
    """Tracebacks are shown only when the user asked for DEBUG logs."""
    return os.environ.get(ENV, "").strip().lower() == "debug"


def _open_log_file(text: str) -> logging.FileHandler:
    path = Path(text).expanduser()
    if path.is_dir():
        raise UsageError(f"--log_file {text!r} is a directory.", "pass a file path, e.g. --log_file run.log.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640))  # not world-readable
        return logging.FileHandler(path, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--log_file {text!r} cannot be written: {exc.strerror or exc}.",
                         "choose a file in a directory you can write to.") from None


def configure(level: int, log_file: str | None = None) -> None:
    global _file_handler
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(_FORMAT))
    console.setLevel(level)
    handlers: list[logging.Handler] = [console]
    _file_handler = None
    if log_file:
        _file_handler = _open_log_file(log_file)
        _file_handler.setFormatter(logging.Formatter(_FORMAT))
        _file_handler.setLevel(logging.DEBUG)
        handlers.append(_file_handler)
    root = logging.getLogger()
    root.handlers[:] = handlers
    root.setLevel(logging.WARNING)
    for name in _OUR_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if _file_handler else level)


def to_log_file(text: str) -> None:
    """Append `text` (the final failure paragraph) to the --log_file, if there is one."""
    if _file_handler is not None:
        _file_handler.stream.write(text + "\n")
        _file_handler.flush()
