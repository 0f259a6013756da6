"""Pausing calibration statistics while a runner replays a forward whose outputs it needs but whose inputs
the statistics have already seen.

A runner that processes a layer in pieces (attention first, routed experts group by group) may have to run
a part of the layer a second time, in the state of the calibration forward, to assemble the layer's
outputs exactly; that replay must not feed the observers, Hessians and smoothing statistics twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_paused: ContextVar[bool] = ContextVar("modelslim_statistics_paused", default=False)


def statistics_paused() -> bool:
    """Whether calibrating modules and statistics hooks must leave their statistics untouched now."""
    return _paused.get()


@contextlib.contextmanager
def pause_statistics() -> Iterator[None]:
    token = _paused.set(True)
    try:
        yield
    finally:
        _paused.reset(token)
