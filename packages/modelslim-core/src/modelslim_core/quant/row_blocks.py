"""Quantizing a large weight a block of output rows at a time, so float32 exists only for one block.

A 29568 x 8192 projection is 0.9 GiB in float32, and a quantizer's temporaries (abs, scaled, rounded) are
each that size again. Every data-free method whose parameters belong to one output row (per-channel and
per-group integer, FP8 per channel, MX blocks of 32 input columns) gives the same codes for a row whatever
other rows are quantized with it, so those methods run on blocks of rows and their containers are stitched
together; the result is bit-identical to quantizing the whole weight at once. Every weight container
(`weight_formats.py`) keeps only buffers whose first dimension is the output row, which is what lets
`row_slice` and `stitch_rows` work on any of them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator

import torch
from torch import nn

#: Float32 bytes one block of rows may take (its temporaries come on top, a few times this). Kept below glibc's
#: largest mmap threshold (32 MiB): larger blocks are each a fresh mmap whose pages fault in on first touch, which
#: measured 10x the page faults and 1.6x the CPU time of quantizing a 29568x8192 bf16 linear with 8 MiB blocks
#: (freed small blocks are reused from the heap instead).
BLOCK_BYTES = 8 * 2**20


def row_blocks(rows: int, columns: int, block_bytes: int | None = None) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive row blocks whose float32 copy stays within `block_bytes` (default BLOCK_BYTES)."""
    step = max(1, (block_bytes or BLOCK_BYTES) // max(1, columns * 4))
    for start in range(0, rows, step):
        yield start, min(rows, start + step)


#: Largest |sum| of codes a float32 accumulator holds exactly (every partial sum an integer below 2^24).
_FLOAT32_EXACT_SUM = 2**24


def row_code_sums(codes: torch.Tensor, chunks: int = 1) -> torch.Tensor:
    """int64 [rows, chunks]: the sum of each row's integer codes over `chunks` equal shards of its columns, a
    block of rows at a time. On the CPU as a float32 matrix-vector product with ones, exact while every partial
    sum stays below 2^24 (|code| <= 128: shards of up to 131071 columns) and half the time of torch's int8
    reduction; else in int32 (exact: |sum| < 128 * columns). A reduction to a wider dtype first copies its whole
    input in that dtype: summing a weight's codes at once in int64 took 8 bytes per element."""
    rows, columns = codes.shape
    width = columns // max(1, chunks)
    if codes.device.type == "cpu" and 128 * width < _FLOAT32_EXACT_SUM:
        ones = torch.ones(width)
        sums = [(codes[start:stop].reshape(-1, width).float() @ ones).reshape(stop - start, chunks)
                for start, stop in row_blocks(rows, columns)]
    else:
        sums = [codes[start:stop].reshape(stop - start, chunks, -1).sum(dim=-1, dtype=torch.int32)
                for start, stop in row_blocks(rows, columns)]
    return torch.cat(sums).to(torch.int64) if sums else torch.zeros(0, chunks, dtype=torch.int64)


def row_slice(container: nn.Module, start: int, stop: int) -> nn.Module:
    """The container of rows [start, stop) (views of its buffers, nothing copied)."""
    sliced = copy.copy(container)
    sliced._buffers = {name: None if value is None else value[start:stop] for name, value in container._buffers.items()}
    return sliced


def stitch_rows(blocks: Iterator[nn.Module], rows: int) -> nn.Module:
    """One container from containers of consecutive row blocks; each buffer is allocated once at full size."""
    whole: nn.Module | None = None
    filled = 0
    for block in blocks:
        count = next(v for v in block._buffers.values() if v is not None).shape[0]
        if whole is None:
            whole = copy.copy(block)
            whole._buffers = {name: None if value is None else value.new_empty((rows, *value.shape[1:]))
                              for name, value in block._buffers.items()}
        for name, value in block._buffers.items():
            if value is not None:
                whole._buffers[name][filled:filled + count] = value
        filled += count
    if whole is None or filled != rows:
        raise ValueError(f"row blocks cover {filled} of {rows} rows")
    return whole


def quantize_by_rows(quantize: Callable[[torch.Tensor], nn.Module], weight: torch.Tensor) -> nn.Module:
    """`quantize(weight)` computed block of rows by block of rows (see the module docstring for why it is exact)."""
    rows, columns = weight.shape
    if rows * columns * 4 <= BLOCK_BYTES:
        return quantize(weight)
    return stitch_rows((quantize(weight[start:stop]) for start, stop in row_blocks(rows, columns)), rows)
