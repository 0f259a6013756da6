"""Ctrl-C (SIGINT) and SIGTERM stop a run in every phase, loading included.

Python only turns SIGINT into KeyboardInterrupt when the parent left it at its default: a run started in
the background by a script (or by a tool that ignores SIGINT for its children) would otherwise ignore
Ctrl-C / `kill -INT` and finish with exit 0. SIGTERM is turned into the same exception so the savers
remove their partial output instead of the process dying mid-write.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(KeyboardInterrupt):
    """SIGTERM, delivered as an interrupt so every `finally` and saver abort runs."""


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextmanager
def installed() -> Iterator[None]:
    """Our handlers for the block; the previous ones afterwards (main() also runs inside tests)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _on_term)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
