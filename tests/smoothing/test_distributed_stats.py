"""Smoothing statistics of two gloo ranks combine to exactly the single-process statistics, rows in sample order."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modelslim_core.smoothing.stats import ChannelStats

_GENERATOR = torch.Generator().manual_seed(0)
#: Five calibration samples of different lengths; as the pipeline deals them, rank r sees SAMPLES[r::2].
SAMPLES = [torch.randn(length, 5, generator=_GENERATOR) for length in (7, 4, 3, 6, 2)]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        stats = ChannelStats(5, keep_rows=True)
        for sample in SAMPLES[rank::2]:
            stats.update(sample[None])  # [batch, tokens, channels], one call per sample as a hook sees it
        stats.synchronize()
        torch.save({k: getattr(stats, k) for k in ("min", "max", "abs_sum", "tokens", "rows")},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_ranks_reduce_to_the_single_process_statistics(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    single = ChannelStats(5, keep_rows=True)
    for sample in SAMPLES:
        single.update(sample[None])
    for rank in (0, 1):
        reduced = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(reduced["min"], single.min) and torch.equal(reduced["max"], single.max)
        assert torch.equal(reduced["tokens"], single.tokens) and torch.allclose(reduced["abs_sum"], single.abs_sum)
        assert torch.equal(reduced["rows"], single.rows)  # the single process's sample order, not rank order
