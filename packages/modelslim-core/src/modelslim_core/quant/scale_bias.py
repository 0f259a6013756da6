"""`scale_bias` of W4A8_DYNAMIC linears (docs/formats.md).

scale_bias = 8 · Σ_k W_q[n, k] · s[n] summed over the input dim: a per-row correction term that the
vLLM-Ascend W4A8 kernels read next to the packed weight. Column-parallel linears (q/k/v, gate,
up, MoE w1/w3) keep their whole input dim on every tensor-parallel rank: one sum per row, `[out, 1]`.
Row-parallel linears (o, down, MoE w2) split the input dim across ranks, so the sum is kept per 16-way
shard, `[out, 16]` (TP 16 is what vLLM-Ascend slices by its TP size). Any other name gets the `[out, 1]`
form; the reference writes the whole `[out, in]` matrix for those, which no consumer can read.
"""

from __future__ import annotations

import torch

from modelslim_core.quant.row_blocks import row_code_sums

SCALE_BIAS_TP = 16
INT4_SHIFT = 8
ROW_PARALLEL_NAMES = ("down_proj", "o_proj", "w2")
COLUMN_PARALLEL_NAMES = ("up_proj", "gate_proj", "q_proj", "k_proj", "v_proj", "w1", "w3")


def scale_bias_chunks(name: str) -> int:
    """How many input-dim shards the scale_bias of the linear called `name` keeps (1 or 16)."""
    if any(part in name for part in COLUMN_PARALLEL_NAMES):
        return 1
    if any(part in name for part in ROW_PARALLEL_NAMES):
        return SCALE_BIAS_TP
    return 1


def scale_bias(codes: torch.Tensor, scale: torch.Tensor, chunks: int) -> torch.Tensor:
    """float32 [out, chunks]: 8 · Σ over each input shard of codes · per-row scale."""
    out, in_features = codes.shape
    if in_features % chunks:
        raise ValueError(f"in_features {in_features} is not divisible into {chunks} tensor-parallel shards")
    # Σ codes · s = s · Σ codes exactly in float64 (|Σ codes| < 2^17 and s has a 24-bit mantissa), so the
    # integer sums are taken first: no float64 copy of the weight (8 bytes per element, twice) is ever made.
    return (INT4_SHIFT * (row_code_sums(codes, chunks).double() * scale.double().reshape(out, 1))).float()
