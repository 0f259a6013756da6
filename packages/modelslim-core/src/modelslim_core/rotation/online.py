"""Online rotations: a rotation of a linear's INPUT applied at run time, its inverse folded into the weight.

Two kinds (what QuaRot's `online: true` adds):
- heads rotation on `o_proj`'s input [.., heads·head_dim]: x' = x·(H ⊗ I_head_dim), H of order num_heads;
  mixes heads (the offline head_dim rotation already mixes inside each head);
- Kronecker rotation on `down_proj`'s input [.., m·n]: x' = x·(M ⊗ N), i.e. viewing x as an m×n matrix X,
  X' = Mᵀ·X·N. A full intermediate-size Hadamard would be huge; M ⊗ N costs two small matmuls.
Tensor parallelism splits these inputs into contiguous slices, one per rank. The rotation may only mix
values inside a slice, so H and M are block-diagonal with `max_tp_size` blocks: any TP degree dividing
`max_tp_size` keeps each block on one rank.

The weight gets W' = W·R (same op on its rows), so x'·W'ᵀ = x·Wᵀ: exact in float, and the quantizer sees
the rotated activations (outliers spread) when it calibrates. Checkpoints carry M, N and H as float32
tensors next to the linear (`<linear>.kronecker_rotation_m/_n`, `<o_proj>.heads_rotation`) and list the
linears in the description's `metadata.quarot`.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from modelslim_core.errors import ConfigError
from modelslim_core.runtime.storage import store
from modelslim_core.rotation.hadamard import ROTATION_SEED, block_diagonal, has_hadamard, random_hadamard, random_orthogonal

logger = logging.getLogger(__name__)

HEADS_SUFFIX = "heads_rotation"
KRONECKER_M_SUFFIX = "kronecker_rotation_m"
KRONECKER_N_SUFFIX = "kronecker_rotation_n"
#: Largest Kronecker factor (a factor is 1, 2 or a multiple of 4 up to this).
MAX_KRONECKER_FACTOR = 256


def _tp_blocked(size: int, max_tp_size: int, what: str) -> torch.Tensor:
    """A rotation of `size` made of `max_tp_size` equal diagonal blocks (Hadamard when one exists)."""
    if size % max_tp_size:
        raise ConfigError(
            f"the {what} ({size}) is not divisible by max_tp_size {max_tp_size}, so the online rotation cannot be "
            "split across tensor-parallel ranks.",
            f"set max_tp_size to a power of two that divides {size}.",
        )
    block = size // max_tp_size
    if has_hadamard(block):
        return block_diagonal(random_hadamard(block, ROTATION_SEED, what), size)
    logger.warning("No Hadamard matrix of order %d exists for the %s; using a random orthogonal block instead.", block, what)
    return block_diagonal(random_orthogonal(block, ROTATION_SEED), size)


def heads_rotation(num_heads: int, max_tp_size: int) -> torch.Tensor:
    return _tp_blocked(num_heads, max_tp_size, "number of attention heads")


def kronecker_factors(size: int, max_tp_size: int) -> tuple[int, int]:
    """m·n = size with m ≤ n closest to √size, both 1, 2 or a multiple of 4 (≤ 256) with a Hadamard matrix, and
    m split into `max_tp_size` blocks that have one too."""
    def usable(k: int) -> bool:
        return (k in (1, 2) or (k % 4 == 0 and k <= MAX_KRONECKER_FACTOR)) and has_hadamard(k)

    best = None
    for m in range(1, math.isqrt(size) + 1):
        if size % m or m % max_tp_size or not usable(m) or not usable(size // m):
            continue
        if not has_hadamard(m // max_tp_size):
            continue
        best = (m, size // m)
    if best is None:
        raise ConfigError(
            f"the intermediate size {size} cannot be written as m·n with m, n ∈ {{1, 2, 4k ≤ {MAX_KRONECKER_FACTOR}}} "
            f"and m divisible by max_tp_size {max_tp_size}, so down_proj cannot get an online Kronecker rotation.",
            "remove those layers from down_proj_online_layers, or lower max_tp_size.",
        )
    return best


def kronecker_rotation(size: int, max_tp_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    m, n = kronecker_factors(size, max_tp_size)
    return _tp_blocked(m, max_tp_size, "Kronecker factor m"), random_hadamard(n, ROTATION_SEED, "Kronecker factor n")


def apply_heads(x: torch.Tensor, heads: torch.Tensor) -> torch.Tensor:
    """x·(H ⊗ I): block g of the output is Σ_h x_h·H[h, g]."""
    h = heads.shape[0]
    shaped = x.reshape(*x.shape[:-1], h, x.shape[-1] // h)
    return torch.einsum("...hd,hg->...gd", shaped, heads.to(shaped.dtype)).reshape(x.shape)


def apply_kronecker(x: torch.Tensor, m: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """x·(M ⊗ N) = vec(Mᵀ·X·N) for X = x viewed as [m, n] (row-major)."""
    shaped = x.reshape(*x.shape[:-1], m.shape[0], n.shape[0])
    rotated = torch.einsum("...ij,ia,jb->...ab", shaped, m.to(shaped.dtype), n.to(shaped.dtype))
    return rotated.reshape(x.shape)


class InputRotation:
    """A forward pre-hook that rotates a linear's input. `carried_by_slot`: when a quantizer replaces the
    linear, the slot's replace function moves this hook to the new module, so the rotation keeps applying."""

    carried_by_slot = True

    def __init__(self, heads: torch.Tensor | None = None, kronecker: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.heads = heads
        self.kronecker = kronecker

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        if self.heads is not None:
            return apply_heads(x, self.heads.to(x.device))
        m, n = self.kronecker
        return apply_kronecker(x, m.to(x.device), n.to(x.device))

    def __call__(self, _module: nn.Module, args: tuple) -> tuple:
        return (self.rotate(args[0]), *args[1:])

    def tensors(self) -> dict[str, torch.Tensor]:
        """The checkpoint tensors (float32) that tell a runtime to apply this rotation."""
        if self.heads is not None:
            return {HEADS_SUFFIX: self.heads.float().contiguous()}
        m, n = self.kronecker
        return {KRONECKER_M_SUFFIX: m.float().contiguous(), KRONECKER_N_SUFFIX: n.float().contiguous()}


@torch.no_grad()
def install(linear: nn.Module, rotation: InputRotation) -> None:
    """Fold the rotation into the weight (W ← W·R) and rotate the input at run time."""
    weight = linear.weight
    store(weight, rotation.rotate(weight.double()))
    linear.register_forward_pre_hook(rotation)


def carry_input_rotations(old: nn.Module, new: nn.Module) -> None:
    """Move the online input rotations of a linear slot's previous module to its replacement."""
    for hook in list(old._forward_pre_hooks.values()):
        if getattr(hook, "carried_by_slot", False) and hook not in new._forward_pre_hooks.values():
            new.register_forward_pre_hook(hook)


def input_rotations(module: nn.Module) -> list[InputRotation]:
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, InputRotation)]
