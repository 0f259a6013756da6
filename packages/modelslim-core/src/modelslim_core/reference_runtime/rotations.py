"""Online rotations a checkpoint declares in `metadata.quarot`, applied to the rebuilt linears' inputs.

The rotation tensors (`<o_proj>.heads_rotation`, `<down_proj>.kronecker_rotation_m/_n`) sit in the weight
files without a description tag; the weights of those linears were multiplied by the same rotation, so a
runtime that skipped them would compute garbage. Every declared tensor must exist, be float32, square and fit
the linear's input size.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from modelslim_core.errors import CheckpointError
from modelslim_core.rotation.online import HEADS_SUFFIX, KRONECKER_M_SUFFIX, KRONECKER_N_SUFFIX, InputRotation

HINT = "the description's metadata.quarot and the weight files come from different runs; re-run the quantization."


def _layers(quarot: dict[str, Any], key: str) -> list[str]:
    entry = quarot.get(key, {})
    layers = entry.get("layers", []) if isinstance(entry, dict) else None
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise CheckpointError(f"metadata.quarot.{key}.layers must be a list of linear names, got {layers!r}.", HINT)
    return layers


def declared_rotation_tensors(description: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Linear name → the rotation tensor suffixes the checkpoint must hold for it."""
    metadata = description.get("metadata") or {}
    quarot = metadata.get("quarot") if isinstance(metadata, dict) else None
    if not quarot:
        return {}
    declared: dict[str, tuple[str, ...]] = {name: (HEADS_SUFFIX,) for name in _layers(quarot, "heads_rotation")}
    for name in _layers(quarot, "kronecker_rotation"):
        declared[name] = declared.get(name, ()) + (KRONECKER_M_SUFFIX, KRONECKER_N_SUFFIX)
    return declared


def _square(checkpoint, name: str) -> torch.Tensor:
    tensor = checkpoint.tensor(name)
    if tensor.dtype != torch.float32 or tensor.dim() != 2 or tensor.shape[0] != tensor.shape[1]:
        raise CheckpointError(f"{name} must be a square float32 matrix, got {tensor.dtype} {list(tensor.shape)}.", HINT)
    return tensor


def plan_online_rotations(model: nn.Module, checkpoint) -> list[tuple[str, InputRotation]]:
    """Read and check the declared rotations against the float skeleton's linears (before kernels replace them)."""
    planned = []
    for linear_name, suffixes in declared_rotation_tensors(checkpoint.description).items():
        try:
            linear = model.get_submodule(linear_name)
        except AttributeError:
            raise CheckpointError(f"metadata.quarot names {linear_name}, which is not a module of this model.", HINT) from None
        in_features = linear.in_features
        if HEADS_SUFFIX in suffixes:
            heads = _square(checkpoint, f"{linear_name}.{HEADS_SUFFIX}")
            if in_features % heads.shape[0]:
                raise CheckpointError(f"{linear_name}.{HEADS_SUFFIX} has order {heads.shape[0]}, which does not divide "
                                      f"the linear's {in_features} inputs.", HINT)
            planned.append((linear_name, InputRotation(heads=heads)))
        if KRONECKER_M_SUFFIX in suffixes:
            m = _square(checkpoint, f"{linear_name}.{KRONECKER_M_SUFFIX}")
            n = _square(checkpoint, f"{linear_name}.{KRONECKER_N_SUFFIX}")
            if m.shape[0] * n.shape[0] != in_features:
                raise CheckpointError(f"{linear_name}'s Kronecker rotation is {m.shape[0]}×{n.shape[0]}, but the linear "
                                      f"has {in_features} inputs.", HINT)
            planned.append((linear_name, InputRotation(kronecker=(m, n))))
    return planned


def install_online_rotations(model: nn.Module, planned: list[tuple[str, InputRotation]]) -> None:
    """Rotate the inputs of the rebuilt linears at run time."""
    for linear_name, rotation in planned:
        model.get_submodule(linear_name).register_forward_pre_hook(rotation)
