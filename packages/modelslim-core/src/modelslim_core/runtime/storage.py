"""Weights stored in the model's dtype during calibration; the compute dtype only while a module computes.

On CPU the runners compute in float32 (bf16 matmuls are slow there and statistics stay exact), but a bf16
checkpoint held in float32 takes twice its size. Under `compute_in(float32)` weights stay as they were read
(bf16); a global forward pre-hook gives each running module float32 copies of its own parameters and the
matching post-hook puts the stored ones back, so float32 exists for one module at a time. Upcasting bf16 to
float32 is exact: every module computes the very numbers it would compute from float32 storage.

A processor that rewrites a weight (smoothing folds, rotations, AWQ's trial weights) writes its float32 result
through `store`/`written_dtype`: under `compute_in` a weight stored below the compute dtype is promoted (the
rewritten value is not representable in bf16, and rounding it would change the checkpoint); outside it (every
device that computes in the model's dtype) the parameter keeps its dtype, as before.

Modules that compute from their own stored weights (`replaces_linear`: calibrating and quantized linears)
upcast what they need themselves and are left alone by the hook; an embedding looks its rows up in the
stored dtype and only the rows are upcast (gathering commutes with the exact upcast).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

_compute_dtype: torch.dtype | None = None
#: id(module) -> the stored parameters its running forward replaced by compute-dtype copies.
_stored: dict[int, dict[str, nn.Parameter]] = {}


def active_compute_dtype() -> torch.dtype | None:
    """The compute dtype of the enclosing `compute_in` (None outside: weights are stored as computed)."""
    return _compute_dtype


def written_dtype(param: torch.Tensor) -> torch.dtype:
    """The dtype a rewritten weight is stored in: promoted to the compute dtype inside `compute_in`."""
    if _compute_dtype is None or not param.is_floating_point():
        return param.dtype
    return torch.promote_types(param.dtype, _compute_dtype)


def store(param: torch.Tensor, value: torch.Tensor) -> None:
    """param ← value (same Parameter object, so modules and references stay valid), in `written_dtype`."""
    param.data = value.to(device=param.device, dtype=written_dtype(param)).contiguous()


def _needs_upcast(tensor: torch.Tensor | None) -> bool:
    return (tensor is not None and tensor.is_floating_point() and not tensor.is_meta
            and tensor.dtype != _compute_dtype)


def _upcast(module: nn.Module, _args: tuple) -> None:
    if (_compute_dtype is None or getattr(type(module), "replaces_linear", False) or id(module) in _stored
            or isinstance(module, nn.Embedding)):  # a lookup: its rows are upcast afterwards (_restore)
        return
    stored = {name: p for name, p in module._parameters.items() if _needs_upcast(p)}
    if not stored:
        return
    _stored[id(module)] = stored
    for name, param in stored.items():
        module._parameters[name] = nn.Parameter(param.detach().to(_compute_dtype), requires_grad=False)


def _restore(module: nn.Module, _args: tuple, output: object) -> object:
    if isinstance(module, nn.Embedding) and isinstance(output, torch.Tensor) and _needs_upcast(output):
        return output.to(_compute_dtype)  # the looked-up rows only: the table is never copied
    stored = _stored.pop(id(module), None)
    if stored is not None:
        for name, param in stored.items():
            module._parameters[name] = param
    return None


@contextmanager
def compute_in(dtype: torch.dtype) -> Iterator[None]:
    """Run module forwards in `dtype` over weights stored in a narrower one (see the module docstring)."""
    global _compute_dtype
    if _compute_dtype is not None:  # nested: the outer context already does it
        yield
        return
    _compute_dtype = dtype
    pre = register_module_forward_pre_hook(_upcast)
    post = register_module_forward_hook(_restore, always_call=True)  # also when a forward is cut short
    try:
        yield
    finally:
        pre.remove()
        post.remove()
        _compute_dtype = None
        _stored.clear()
