"""Where a runner keeps the model's units and the calibration activations.

The unit pipeline is the same for every runner; only placement differs. Model-wise keeps the whole model
on the device. Layer-wise keeps it on the host, moves one unit to the device while it is processed and
drops the unit's weights once the savers have written it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from modelslim_core.runtime.unit import Unit


def map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply `fn` to every tensor inside nested tuples/lists/dicts; other values are kept as they are."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(map_tensors(v, fn) for v in value)
    if isinstance(value, list):
        return [map_tensors(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    return value


def move(value: Any, device: torch.device) -> Any:
    """Move every tensor inside nested tuples/lists/dicts to `device`."""
    return map_tensors(value, lambda tensor: tensor.to(device))


class Placement:
    """Model-wise placement: everything on the compute device."""

    def __init__(self, device: torch.device):
        self.device = device

    @property
    def activation_device(self) -> torch.device:
        return self.device

    def on_model_loaded(self, model: nn.Module) -> None:
        model.to(self.device)

    def enter(self, unit: Unit) -> None:
        """Before a unit is processed."""

    def leave(self, unit: Unit, keep_weights: bool) -> None:
        """After a unit is processed and saved."""


class LayerWisePlacement(Placement):
    """Host-resident model; one unit on the device at a time; saved units are released."""

    @property
    def activation_device(self) -> torch.device:
        return torch.device("cpu")

    def on_model_loaded(self, model: nn.Module) -> None:
        model.to("cpu")

    def enter(self, unit: Unit) -> None:
        unit.module.to(self.device)

    def leave(self, unit: Unit, keep_weights: bool) -> None:
        unit.module.to("cpu" if keep_weights else "meta")
