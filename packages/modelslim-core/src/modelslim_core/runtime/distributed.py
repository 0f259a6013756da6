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




def gather_samples(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-sample statistics of every rank, in the original sample order. Each tensor's first dim runs over
    this rank's samples, which the pipeline dealt out as `samples[rank::world]`; the result re-interleaves
    them, so a data-parallel run sees exactly the rows (and row order) of a single-process run."""
    if not is_distributed():
        return tensors
    world = rank_and_world()[1]
    gathered: list = [None] * world
    dist.all_gather_object(gathered, [t.detach().cpu() for t in tensors])
    merged = []
    for index in range(len(tensors)):
        parts = [gathered[rank][index] for rank in range(world)]
        out = parts[0].new_empty((sum(p.shape[0] for p in parts), *parts[0].shape[1:]))
        for rank, part in enumerate(parts):
            out[rank::world] = part
        merged.append(out)
    return merged
