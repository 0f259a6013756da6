"""ADMM pruning: zero a fraction of a linear's weights while keeping its outputs on the calibration inputs.

Magnitude pruning ignores which inputs are large or correlated; ADMM instead solves
    min_W ‖X·Wᵀ − X·W₀ᵀ‖²  subject to  W having `sparse_ratio` zeros
by alternating (docs/algorithms.md, "Sparsity"):
    Z = (Ŵ + Λ)∘mask          mask = all but the globally smallest `sparse_ratio` fraction of |Ŵ + Λ|
    Λ = Λ + Ŵ − Z
    Ŵ = (H + ρ₀I + ρI)⁻¹ · ((H + ρ₀I)·Ŵ₀ + ρ(Z − Λ))
with H = XᵀX. The mask is re-chosen during the first `mask_iterations` iterations, then frozen so the
last ones only refit the surviving weights. The problem is first normalised by d = sqrt(diag H): columns of
W are multiplied by d and H becomes D⁻¹HD⁻¹ (unit diagonal), so ρ₀ = 0.1·mean(diag H) and ρ = 1 mean
the same thing for every layer whatever the scale of its inputs; the result Z is divided by d again.
Everything is float32 (the inverse in float64, it is the only ill-conditioned step).
"""

from __future__ import annotations

import torch

DEFAULT_ITERATIONS = 20
DEFAULT_MASK_ITERATIONS = 15
DEFAULT_RHO = 1.0
DEFAULT_DAMPING = 0.1
_NORM_EPS = 1e-8


def prune_count(numel: int, sparse_ratio: float) -> int:
    """How many weights a ratio zeroes (rounded down, so a ratio never prunes more than asked)."""
    return int(numel * sparse_ratio)


def keep_mask(values: torch.Tensor, sparse_ratio: float) -> torch.Tensor:
    """True for every entry except the `sparse_ratio` fraction with the smallest |value| (one global ranking)."""
    count = prune_count(values.numel(), sparse_ratio)
    mask = torch.ones(values.numel(), dtype=torch.bool, device=values.device)
    if count:
        smallest = torch.topk(values.abs().flatten(), count, largest=False, sorted=False).indices
        mask[smallest] = False
    return mask.reshape(values.shape)


def magnitude_prune(weight: torch.Tensor, sparse_ratio: float) -> torch.Tensor:
    """The baseline: zero the globally smallest weights, change nothing else."""
    return weight * keep_mask(weight, sparse_ratio)


def admm_prune(
    weight: torch.Tensor,
    gram: torch.Tensor,
    sparse_ratio: float,
    iterations: int = DEFAULT_ITERATIONS,
    mask_iterations: int = DEFAULT_MASK_ITERATIONS,
    rho: float = DEFAULT_RHO,
    damping: float = DEFAULT_DAMPING,
) -> torch.Tensor:
    """The pruned [out, in] weight (float32) given XᵀX [in, in] of the layer's calibration inputs."""
    w = weight.detach().float()
    if sparse_ratio <= 0:
        return w.clone()
    h = gram.detach().float()
    d = torch.sqrt(torch.diag(h).clamp(min=0)) + _NORM_EPS
    h = h / d[:, None] / d[None, :]
    w_hat = (w * d).T.contiguous()  # [in, out]: one least-squares problem per output column
    h.diagonal().add_(damping * torch.diag(h).mean())
    target = h @ w_hat
    h.diagonal().add_(rho)
    h_inv = torch.linalg.inv(h.double()).float()
    dual = torch.zeros_like(w_hat)
    mask = keep_mask(w_hat, sparse_ratio)
    z = w_hat * mask
    for step in range(iterations):
        if step < mask_iterations:
            mask = keep_mask(w_hat + dual, sparse_ratio)
        z = (w_hat + dual) * mask
        dual += w_hat - z
        w_hat = h_inv @ (target + rho * (z - dual))
    return (z.T / d).contiguous()


def output_error(weight: torch.Tensor, reference: torch.Tensor, gram: torch.Tensor) -> float:
    """‖X(W − W₀)ᵀ‖² / ‖XW₀ᵀ‖² computed from the Gram matrix: how much of the layer's output pruning changed."""
    delta = (weight - reference).float()
    numerator = torch.einsum("oi,ij,oj->", delta, gram.float(), delta)
    denominator = torch.einsum("oi,ij,oj->", reference.float(), gram.float(), reference.float())
    return float(numerator / denominator.clamp(min=1e-30))
