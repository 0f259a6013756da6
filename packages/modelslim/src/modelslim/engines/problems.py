"""One reason a serving engine would not serve a checkpoint (or would serve it wrongly)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    engine: str
    where: str  # a tensor, layer or description key
    message: str

    def __str__(self) -> str:
        return f"{self.engine}: {self.where}: {self.message}"
