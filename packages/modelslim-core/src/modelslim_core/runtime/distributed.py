"""Data-parallel helpers: who am I, reduce calibration statistics, share work that only one rank should do.

Every helper is a no-op in a single process, so processors call them unconditionally. Collectives must be
called by every rank in the same order: processors call them once per unit in `postprocess` (never per
sample), so ranks with different sample counts stay in step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")
#: Set while this rank works alone on something it owns (`working_alone`): helpers behave as in one process.
_alone = False


@contextmanager
def working_alone() -> Iterator[None]:
    """While the context lasts, this rank does work no other rank shares (a piece it owns): every helper here is
    the single-process no-op, so a processor's collectives are skipped and its results are computed as one
    process computes them."""
    global _alone
    previous, _alone = _alone, True
    try:
        yield
    finally:
        _alone = previous


def rank_and_world() -> tuple[int, int]:
    if _alone:
        return 0, 1
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



def compute_once(count: int, compute: Callable[[int], T], first_owner: int = 0) -> list[T]:
    """[compute(0), ..., compute(count-1)] on every rank, each item computed by one rank only.

    Item i belongs to rank (first_owner + i) % world, round robin, so consecutive units (pass the unit
    index as `first_owner`) spread their work over all ranks. Each rank computes its own items, then every
    rank in turn broadcasts its results (pickled, so `compute` must return CPU objects); the values every
    rank ends with are the owner's bit for bit. One broadcast per rank that owns something: every rank must
    call this with the same `count` and `first_owner`, at the same point of the run.
    """
    rank, world = rank_and_world()
    if world == 1:
        return [compute(index) for index in range(count)]
    owners = [(first_owner + index) % world for index in range(count)]
    results: list = [compute(index) if owner == rank else None for index, owner in enumerate(owners)]
    for source in sorted(set(owners)):
        indices = [index for index, owner in enumerate(owners) if owner == source]
        payload = [[results[index] for index in indices] if source == rank else None]
        dist.broadcast_object_list(payload, src=source)
        for index, value in zip(indices, payload[0], strict=True):
            results[index] = value
    return results

def gather_in_sample_order(items: list) -> list:
    """Every rank's per-sample items, merged back into the original sample order.

    The pipeline deals calibration samples out as `samples[rank::world]`, so taking one item from each rank in
    turn restores the single-process order (a rank with fewer items is skipped once it runs out), and searches
    over gathered rows break ties exactly as one process would."""
    if not is_distributed():
        return items
    gathered: list = [None] * rank_and_world()[1]
    dist.all_gather_object(gathered, items)
    longest = max(len(part) for part in gathered)
    return [part[index] for index in range(longest) for part in gathered if index < len(part)]


def gather_samples(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per-sample statistics of every rank, in the original sample order: each tensor's first dim runs over
    this rank's samples, and the result holds every rank's rows in single-process order (see
    gather_in_sample_order), so a data-parallel run sees exactly the rows of a single-process run."""
    if not is_distributed():
        return tensors
    per_sample = list(zip(*(t.detach().cpu().unbind(0) for t in tensors)))
    merged = gather_in_sample_order(per_sample)
    return [torch.stack(column) for column in zip(*merged, strict=True)]
