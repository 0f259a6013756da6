"""The memory plan printed before calibration and the run summary printed at the end."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from modelslim_core.runtime.unit import Unit
from modelslim_runners.memory import device_peak_bytes, peak_rss_bytes

logger = logging.getLogger(__name__)
GIB = 2**30


def gib(value: float) -> str:
    return f"{value / GIB:.2f} GiB"


def unit_bytes(unit: Unit, dtype: torch.dtype) -> int:
    """A unit's weights in the compute dtype (shapes only: works on a weightless skeleton)."""
    element = torch.empty((), dtype=dtype).element_size()
    return sum(p.numel() for p in unit.module.parameters()) * element


@dataclass
class MemoryPlan:
    """Expected peak host memory of a run, from shapes only (works on a weightless skeleton)."""

    units: int
    largest_unit: str
    largest_unit_bytes: int
    model_bytes: int
    activation_bytes: int
    peak_host_bytes: int
    formula: str

    def describe(self) -> str:
        return (f"{self.units} units, largest {self.largest_unit} ({gib(self.largest_unit_bytes)}); model "
                f"{gib(self.model_bytes)}; activations {gib(self.activation_bytes)}; expected peak host memory "
                f"~{gib(self.peak_host_bytes)} ({self.formula})")


def memory_plan(model: nn.Module, units: list[Unit], dtype: torch.dtype, activations: int, layer_wise: bool) -> MemoryPlan:
    largest = max(units, key=lambda u: unit_bytes(u, dtype))
    largest_bytes = unit_bytes(largest, dtype)
    element = torch.empty((), dtype=dtype).element_size()
    model_bytes = sum(p.numel() for p in model.parameters()) * element
    outside = model_bytes - sum(unit_bytes(u, dtype) for u in units)
    if layer_wise:
        host = 2 * activations + 3 * largest_bytes + outside
        formula = ("3 x largest unit + embeddings/head + 2 x activations; an upper bound for float32 "
                   "checkpoints: narrower ones are held in their dtype, and the run plans each piece before it loads")
    else:
        host = 2 * model_bytes + 2 * activations
        formula = "2 x model + 2 x activations"
    return MemoryPlan(len(units), largest.name, largest_bytes, model_bytes, activations, host, formula)


def log_memory_plan(model: nn.Module, units: list[Unit], dtype: torch.dtype, activations: int, layer_wise: bool) -> None:
    logger.info("Memory plan: %s.", memory_plan(model, units, dtype, activations, layer_wise).describe())


@dataclass
class RunSummary:
    """Per-unit time and memory, logged at the end of a stage."""

    stage: str
    device: torch.device
    units: list[tuple[str, float, int]] = field(default_factory=list)
    #: What adapters report about processed units (MoE routing counts), logged with the summary.
    notes: list[str] = field(default_factory=list)
    #: The memory plan vs the measured peak per kind of piece (budget.py), for the report.
    memory: dict | None = None

    def note(self, lines: list[str]) -> None:
        for line in lines:
            logger.debug("%s", line)
        self.notes.extend(lines)

    def add(self, name: str, seconds: float, rss: int) -> None:
        self.units.append((name, seconds, rss))

    def log(self) -> None:
        if not self.units:
            return
        total = sum(seconds for _, seconds, _ in self.units)
        slowest = max(self.units, key=lambda u: u[1])
        device_peak = device_peak_bytes(self.device)
        logger.info(
            "Stage %s: %d units in %.1f s (%.2f s/unit, slowest %s %.2f s); peak host RSS %s%s.",
            self.stage, len(self.units), total, total / len(self.units), slowest[0], slowest[1],
            gib(peak_rss_bytes()), f", peak device memory {gib(device_peak)}" if device_peak is not None else "",
        )
        for line in self.notes:
            logger.info("  %s", line)
        for name, seconds, rss in self.units:
            logger.debug("  %s: %.2f s, RSS after %s", name, seconds, gib(rss))

