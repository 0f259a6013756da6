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
    """One schedulable block of the model, e.g. `model.layers.3`, or a piece of one.

    Runners may hand processors and savers a unit piece by piece (one linear, or attention / shared experts /
    a group of routed experts of a MoE layer) so that only that piece's weights are in memory. A piece keeps
    the unit's name, module and index and says which modules it covers: `parts`, exact module paths relative
    to `module` (their own parameters), and `subtrees`, paths covered with everything below them.
    """

    name: str
    module: nn.Module
    index: int
    parts: frozenset[str] | None = None
    subtrees: tuple[str, ...] = ()
    #: A short label of the piece for logs and reports ("" for a whole unit).
    label: str = ""

    @property
    def whole(self) -> bool:
        return self.parts is None and not self.subtrees

    def covers(self, path: str) -> bool:
        """Whether the module at `path` (relative to `module`; "" is the unit itself) belongs to this unit/piece."""
        if self.whole:
            return True
        if self.parts is not None and path in self.parts:
            return True
        return any(path == tree or path.startswith(tree + ".") for tree in self.subtrees)

    def covers_site(self, site_name: str) -> bool:
        """Whether a linear site (full name) lies in this unit/piece."""
        return self.whole or self.covers(site_name[len(self.name) + 1:] if self.name else site_name)


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


def module_linear_sites(root: nn.Module, prefix: str, tree: str = "") -> list[LinearSite]:
    """Every linear slot under `root` (only those in the subtree at path `tree`, when given), named
    `prefix.<path>`, in `named_modules` order. A streamed piece is one linear of a layer that may hold hundreds
    of experts: walking only its subtree keeps finding its site from costing a walk of the whole layer."""
    sites: list[LinearSite] = []
    start = root.get_submodule(tree) if tree else root
    for sub, module in start.named_modules():
        path = f"{tree}.{sub}" if tree and sub else (tree or sub)
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
