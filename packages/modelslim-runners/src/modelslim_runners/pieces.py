"""Splitting a unit into pieces a runner loads, processes and saves one at a time.

A data-free stage whose processors treat each linear on its own (`Processor.handles_pieces`) needs only
one linear's weights in memory at a time: every linear slot becomes a piece, and the modules between two
linears (norms, the router, containers) form pieces of their own. Pieces follow `named_modules` order, so a
saver writing piece after piece writes exactly what it would write for the whole unit, in the same order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from torch import nn

from modelslim_core.runtime.unit import Unit, is_linear_slot


@contextmanager
def forward_replaced(module: nn.Module, forward: Callable[..., Any]) -> Iterator[None]:
    """`module` runs `forward` instead of its own while the context lasts: a stand-in for a piece of the unit that
    is not loaded (it records what reaches it, or returns what was recorded)."""
    module.forward = forward  # instance attribute: nn.Module.__call__ uses it
    try:
        yield
    finally:
        del module.forward


def linear_pieces(unit: Unit) -> list[Unit]:
    """The unit as consecutive pieces: one per linear slot, one per run of other modules between them."""
    pieces: list[Unit] = []
    pending: list[str] = []
    slots: list[str] = []

    def flush() -> None:
        if pending:
            pieces.append(Unit(unit.name, unit.module, unit.index, parts=frozenset(pending), label=pending[0] or "(root)"))
            pending.clear()

    for path, module in unit.module.named_modules():
        if any(path.startswith(slot + ".") for slot in slots[-1:]):
            continue  # inside the linear slot just added (a replaced linear's own submodules)
        if path and is_linear_slot(module):
            flush()
            slots.append(path)
            pieces.append(Unit(unit.name, unit.module, unit.index, subtrees=(path,), label=path))
        else:
            pending.append(path)
    flush()
    return pieces


def piece_parameter_names(piece: Unit) -> list[str]:
    """Parameter names (relative to the unit's module) that belong to `piece`."""
    root = piece.module
    names: list[str] = []
    for path in sorted(piece.parts or ()):
        module = root.get_submodule(path) if path else root
        names += [f"{path}.{n}" if path else n for n, _ in module.named_parameters(recurse=False)]
    for tree in piece.subtrees:
        module = root.get_submodule(tree)
        names += [f"{tree}.{n}" for n, _ in module.named_parameters(remove_duplicate=False)]
    return names


def piece_bytes(piece: Unit, element_size: int) -> int:
    """The piece's weights at `element_size` bytes per element (shapes only: works on a meta skeleton)."""
    return sum(piece.module.get_parameter(name).numel() for name in piece_parameter_names(piece)) * element_size


def linear_weight_shapes(piece: Unit) -> list[tuple[int, int]]:
    """[out, in] of every linear slot's weight in the piece (or the whole unit)."""
    shapes = []
    for path, module in piece.module.named_modules():
        weight = getattr(module, "weight", None)
        if (path and is_linear_slot(module) and isinstance(weight, nn.Parameter) and weight.dim() == 2
                and piece.covers(path)):
            shapes.append((weight.shape[0], weight.shape[1]))
    return shapes


def release_piece(piece: Unit) -> None:
    """Put the piece's modules back on `meta` (their saved weights, quantized or not, are dropped)."""
    for tree in piece.subtrees:
        piece.module.get_submodule(tree).to("meta")
    for name in piece_parameter_names(piece):
        owner_name, _, attr = name.rpartition(".")
        owner = piece.module.get_submodule(owner_name) if owner_name else piece.module
        param = owner._parameters[attr]
        if param is not None and not param.is_meta:
            owner._parameters[attr] = nn.Parameter(param.detach().to("meta"), requires_grad=False)
