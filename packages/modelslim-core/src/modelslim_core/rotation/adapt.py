"""Learning an orthogonal refinement R of the Hadamard rotation Q from real activations (adapt_rotation).

Given A (rows = sequence-mean inputs of the chosen linears, hidden size wide), find R so that the rotated
activations P = A·Q·R lose as little as possible to per-row symmetric fake quantization. Alternating
minimisation, one step:
  P = A·Q·R;  B = fakequant(P);  R_step = argmin over orthogonal X of ‖P·X − B‖_F = polar factor of PᵀB;
  R ← R·R_step;  loss = ‖P·R_step − fakequant(P·R_step)‖_F / numel.
The best R seen is kept; after `MIN_STEPS` steps the search stops once `PATIENCE` steps bring no improvement.

The polar factor is taken from an SVD in float64. The reference iterates Newton–Schulz instead, which maps
zero singular values to zero: with fewer sample rows than hidden channels PᵀB is rank-deficient and its
"rotation" is then not orthogonal, so the rotated model would no longer compute the same function. The SVD
completes the missing directions orthogonally, so Q·R is always a rotation.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

MIN_STEPS = 6
PATIENCE = 5
SCALE_FLOOR = 1e-5
ROW_BATCH = 128
QMAX = {"int4": 7, "int8": 127}


def fake_quant_rows(p: torch.Tensor, quant_dtype: str) -> torch.Tensor:
    """Per-row symmetric fake quantization (scale = max|row| / qmax, floored; full signed clamp range)."""
    qmax = QMAX[quant_dtype]
    out = torch.empty_like(p)
    for start in range(0, p.shape[0], ROW_BATCH):
        rows = p[start : start + ROW_BATCH]
        scale = (rows.abs().amax(dim=1, keepdim=True) / qmax).clamp_min(SCALE_FLOOR)
        out[start : start + ROW_BATCH] = torch.clamp(torch.round(rows / scale), -qmax - 1, qmax) * scale
    return out


def polar_factor(c: torch.Tensor) -> torch.Tensor:
    """The orthogonal U·Vᵀ of C = U·Σ·Vᵀ: the rotation closest to C (orthogonal even when C is singular)."""
    u, _, vh = torch.linalg.svd(c.double())
    return u @ vh


def quant_loss(p: torch.Tensor, quant_dtype: str) -> float:
    return float((p - fake_quant_rows(p, quant_dtype)).norm() / p.numel())


def evenly_spaced_rows(rows: torch.Tensor, max_samples: int) -> torch.Tensor:
    """At most `max_samples` rows, spread evenly over all of them (keeps every layer represented)."""
    if rows.shape[0] <= max_samples:
        return rows
    index = torch.linspace(0, rows.shape[0] - 1, max_samples).round().long()
    return rows[index]


def optimize_rotation(activations: torch.Tensor, hadamard: torch.Tensor, steps: int, quant_dtype: str) -> torch.Tensor:
    """Q·R_best (float64) for activations [rows, hidden] and the Hadamard rotation Q [hidden, hidden]."""
    a = activations.double()
    q = hadamard.double()
    rotation = torch.eye(q.shape[0], dtype=torch.float64)
    initial = best_loss = quant_loss(a @ q, quant_dtype)
    best = rotation.clone()
    stale = 0
    for step in range(steps):
        p = a @ q @ rotation
        step_rotation = polar_factor(p.T @ fake_quant_rows(p, quant_dtype))
        rotation = rotation @ step_rotation
        loss = quant_loss(p @ step_rotation, quant_dtype)
        if loss < best_loss:
            best_loss, best, stale = loss, rotation.clone(), 0
        else:
            stale += 1
        if step + 1 >= MIN_STEPS and stale >= PATIENCE:
            break
    logger.info("adapt_rotation: quantization loss %.3e with the Hadamard rotation, %.3e after refinement.",
                initial, best_loss)
    return q @ best
