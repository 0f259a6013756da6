"""Units (what a runner schedules) and linear sites (what a quantizer replaces).

A unit is the adapter's choice (a decoder layer, a vision block, a DiT block). A linear site is an
`nn.Linear`-like slot inside a unit that a processor may read and replace. Processors never walk modules
themselves: the adapter hands them sites, so a family that stores MoE experts as fused 3-D parameters can
present each expert as its own linear without any processor knowing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn


@dataclass
class Unit:
    """One schedulable block of the model, e.g. `model.layers.3`."""

    name: str
    module: nn.Module
    index: int


@dataclass
class LinearSite:
    """A named slot holding a linear layer, with a way to put another module in its place."""

    name: str
    module: nn.Module
    replace: Callable[[nn.Module], None]


def child_replacer(parent: nn.Module, attr: str) -> Callable[[nn.Module], None]:
    """A replace function that sets `parent.<attr>`."""

    def _replace(new: nn.Module) -> None:
        from modelslim_core.rotation.online import carry_input_rotations

        old = getattr(parent, attr, None)
        if isinstance(old, nn.Module) and old is not new:
            carry_input_rotations(old, new)  # an online rotation belongs to the slot, not to one module in it
        setattr(parent, attr, new)

    return _replace


def is_linear_slot(module: nn.Module) -> bool:
    """An `nn.Linear`, or a module that took a linear's place (it sets `replaces_linear = True`)."""
    return isinstance(module, nn.Linear) or getattr(module, "replaces_linear", False)


def module_linear_sites(root: nn.Module, prefix: str) -> list[LinearSite]:
    """Every linear slot under `root`, named `prefix.<path>`, in `named_modules` order."""
    sites: list[LinearSite] = []
    for path, module in root.named_modules():
        if not path or not is_linear_slot(module):
            continue
        parent_path, _, attr = path.rpartition(".")
        parent = root.get_submodule(parent_path) if parent_path else root
        sites.append(LinearSite(f"{prefix}.{path}", module, child_replacer(parent, attr)))
    return sites


@dataclass
class UnitInput:
    """The positional and keyword arguments of one calibration sample at a unit's entry."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
