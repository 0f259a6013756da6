"""The weight algebra that makes a rotation invisible to the model's function.

Row-vector convention: a linear computes y = x·Wᵀ + b with W of shape [out, in].
- Rotating a linear's input (`rotate_input`): feeding x·R instead of x needs W' = W·R, since (x·R)·(W·R)ᵀ = x·Wᵀ
  for orthogonal R.
- Rotating a linear's output (`rotate_output`): producing y·R needs W' = Rᵀ·W and b' = b·R.
- An RMSNorm only commutes with a rotation when its scale is uniform, so its weight γ is first folded into
  the linears that read the norm (`fuse_norm_into_linears`: W ×= γ on input columns) and set to 1.
A rotation smaller than the dimension it acts on is applied block-diagonally (one copy per block: a
head_dim rotation on all heads of v_proj/o_proj). Everything is computed in float64 and cast back to the
parameter's dtype, so each rotation rounds a stored weight exactly once.
"""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.runtime.storage import store

#: Rows rotated at a time: bounds the float64 working copy of a large matrix (an LM head) to ~64 MiB.
ROW_CHUNK = 2048


def right_multiply(rows: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """rows·R (rows: [n, d]) in float64, where an [m, m] rotation with m < d acts block-diagonally on each of the
    d/m consecutive blocks of columns (no d×d matrix is ever built)."""
    r = rotation.to(device=rows.device, dtype=torch.float64)
    m = r.shape[0]
    d = rows.shape[-1]
    if d % m:
        raise ValueError(f"a {m}×{m} rotation cannot act block-diagonally on dimension {d}")
    out = torch.empty(rows.shape, dtype=torch.float64, device=rows.device)
    for start in range(0, rows.shape[0], ROW_CHUNK):
        chunk = rows[start : start + ROW_CHUNK].double()
        out[start : start + ROW_CHUNK] = (chunk.reshape(-1, d // m, m) @ r).reshape(-1, d)
    return out


def _assign(param: nn.Parameter, value: torch.Tensor) -> None:
    store(param, value)


@torch.no_grad()
def rotate_input(module: nn.Module, rotation: torch.Tensor) -> None:
    """W ← W·R for a linear ([out, in]) or an embedding table ([vocab, hidden]: each row is an output vector)."""
    _assign(module.weight, right_multiply(module.weight, rotation))


@torch.no_grad()
def rotate_output(linear: nn.Module, rotation: torch.Tensor) -> None:
    """W ← Rᵀ·W and b ← b·R: the linear now produces its old output times R."""
    _assign(linear.weight, right_multiply(linear.weight.T, rotation).T)
    bias = getattr(linear, "bias", None)
    if bias is not None:
        _assign(bias, right_multiply(bias[None, :], rotation)[0])


@torch.no_grad()
def computes_rms_norm(norm: nn.Module) -> bool:
    """Whether `norm` computes x/rms(x)·γ (+ β): probed on one non-constant vector, so a LayerNorm (which
    subtracts the mean and does not commute with a rotation) or a (1 + γ) scale (Gemma) is told apart."""
    weight = norm.weight
    x = torch.ones(1, weight.shape[0], dtype=torch.float32, device=weight.device)
    x[0, 0] = 3.0
    expected = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True)) * weight.float()
    beta = getattr(norm, "bias", None)
    if beta is not None:
        expected = expected + beta.float()
    actual = norm(x.to(weight.dtype)).float()
    return torch.allclose(actual, expected, rtol=2e-2, atol=1e-3 * float(expected.abs().max()))


@torch.no_grad()
def fuse_norm_into_linears(norm: nn.Module, linears: list[nn.Module]) -> None:
    """Fold the norm's per-channel scale γ (and bias β, if any: b += W·β) into its consumers; the norm then
    has γ = 1 (β = 0) and commutes with any rotation of the residual stream."""
    gamma = norm.weight.double()
    beta = getattr(norm, "bias", None)
    for linear in linears:
        weight = linear.weight.double()
        if beta is not None:
            shift = weight @ beta.double()
            if linear.bias is None:
                linear.bias = nn.Parameter(shift.to(linear.weight.dtype).to(linear.weight.device), requires_grad=False)
            else:
                _assign(linear.bias, linear.bias.double() + shift)
        _assign(linear.weight, weight * gamma.to(weight.device)[None, :])
    _assign(norm.weight, torch.ones_like(gamma))
    if beta is not None:
        _assign(beta, torch.zeros_like(beta, dtype=torch.float64))
