"""Data-parallel helpers: who am I, reduce calibration statistics, share work that only one rank should do.

Every helper is a no-op in a single process, so processors call them unconditionally. Collectives must be
called by every rank in the same order: processors call them once per unit in `postprocess` (never per
sample), so ranks with different sample counts stay in step.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_distributed() -> bool:
    return rank_and_world()[1] > 1


def all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    """`op` in {"min", "max", "sum"}; returns the reduced tensor (the input itself when not distributed)."""
    if not is_distributed():
        return tensor
    reduced = tensor.detach().clone().cpu()
    dist.all_reduce(reduced, op={"min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX, "sum": dist.ReduceOp.SUM}[op])
    return reduced.to(tensor.device)



def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's rows concatenated in rank order (ranks may hold different row counts); CPU result."""
    if not is_distributed():
        return tensor
    gathered: list = [None] * rank_and_world()[1]
    dist.all_gather_object(gathered, tensor.detach().cpu())
    return torch.cat(gathered, dim=0)
