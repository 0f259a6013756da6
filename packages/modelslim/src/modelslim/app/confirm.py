"""Asking the user to accept a fallback practice.

With --yes the fallback is accepted and logged. On a terminal the user is asked (y/yes accepts). Without
a terminal nobody can answer, so the run stops with a message instead of hanging or crashing.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from modelslim_core.errors import AbortedError

logger = logging.getLogger(__name__)


class Confirmer:
    def __init__(self, assume_yes: bool, stdin: TextIO | None = None, stderr: TextIO | None = None):
        self.assume_yes = assume_yes
        self.stdin = stdin or sys.stdin
        self.stderr = stderr or sys.stderr

    def __call__(self, tip: str) -> None:
        if self.assume_yes:
            logger.warning("%s (accepted by --yes)", tip)
            return
        if not (self.stdin and self.stdin.isatty()):
            raise AbortedError(
                f"confirmation needed: {tip}",
                "rerun with --yes to accept it, or choose with --config_path / another --quant_type.",
            )
        self.stderr.write(f"{tip}\nContinue? [y/N] ")
        self.stderr.flush()
        answer = self.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise AbortedError("not confirmed; nothing was quantized.", "use --config_path or another --quant_type.")
