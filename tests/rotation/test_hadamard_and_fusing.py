"""Hadamard matrices (entries, orthogonality, every order the reference ships) and the fusing algebra, by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelslim_core.errors import ConfigError
from modelslim_core.rotation.fusing import fuse_norm_into_linears, right_multiply, rotate_input, rotate_output
from modelslim_core.rotation.hadamard import (
    hadamard_matrix,
    has_hadamard,
    hidden_rotation,
    random_hadamard,
    random_signs,
)
from modelslim_core.rotation.online import apply_heads, apply_kronecker, kronecker_factors

F64 = torch.float64


def test_small_orders_by_hand():
    assert torch.equal(hadamard_matrix(2), torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=F64))
    h4 = torch.tensor([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=F64)
    assert torch.equal(hadamard_matrix(4), h4)  # Sylvester order


# every k of the reference's tables except 156 and 172 (Williamson-type), times powers of two
@pytest.mark.parametrize("n", [1, 2, 4, 8, 64, 12, 20, 28, 36, 40, 52, 60, 76, 108, 136, 140, 160, 200, 24, 48, 896])
def test_hadamard_orders(n):
    h = hadamard_matrix(n)
    assert h.shape == (n, n) and set(h.unique().tolist()) <= {-1.0, 1.0}
    assert torch.equal(h @ h.T, n * torch.eye(n, dtype=F64))


@pytest.mark.parametrize("n", [3, 6, 10, 92, 156, 172])
def test_unconstructible_orders_suggest_block_size(n):
    assert not has_hadamard(n)
    with pytest.raises(ConfigError, match="block_size"):
        hadamard_matrix(n, "hidden-size rotation")


def test_random_hadamard_is_orthogonal_and_seeded():
    q = random_hadamard(12)
    assert torch.allclose(q @ q.T, torch.eye(12, dtype=F64), atol=1e-12)
    assert torch.equal(q, random_hadamard(12))  # same seed, same matrix on every rank and call
    assert torch.equal(q, random_signs(12)[:, None] * hadamard_matrix(12) / 12**0.5)
    assert not torch.equal(random_hadamard(12, seed=7), q)


def test_block_size_gives_block_diagonal_rotation():
    q = hidden_rotation(16, block_size=4)
    block = random_hadamard(4)
    assert torch.equal(q, torch.block_diag(block, block, block, block))
    with pytest.raises(ConfigError, match="does not divide"):
        hidden_rotation(20, block_size=8)


def test_right_multiply_block_diagonal_by_hand():
    rows = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert torch.equal(right_multiply(rows, swap), torch.tensor([[2.0, 1.0, 4.0, 3.0]], dtype=F64))


def test_rotations_keep_a_linear_chain_exact():
    """norm-free chain: x → A (reads the stream) ; B (writes the stream) → y. Rotating A's input by Q and B's
    output by Q turns y into y·Q and leaves xA unchanged (hand algebra: (xQ)(AQ)ᵀ = xAᵀ)."""
    torch.manual_seed(0)
    a, b = nn.Linear(8, 6), nn.Linear(6, 8)
    x = torch.randn(3, 8)
    q = random_hadamard(8).float()
    hidden, out = a(x), b(a(x))
    rotate_input(a, q)
    rotate_output(b, q)
    assert torch.allclose(a(x @ q), hidden, atol=1e-5)
    assert torch.allclose(b(a(x @ q)), out @ q, atol=1e-5)


def test_norm_fusion_by_hand():
    norm = nn.LayerNorm(2, elementwise_affine=True)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2.0, 3.0]))
        norm.bias.copy_(torch.tensor([1.0, -1.0]))
    linear = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[1.0, 10.0]]))
    x = torch.tensor([[0.5, -0.25]])
    expected = linear(norm(x))
    fuse_norm_into_linears(norm, [linear])
    assert torch.equal(linear.weight, torch.tensor([[2.0, 30.0]]))  # W·diag(γ)
    assert torch.equal(linear.bias, torch.tensor([-9.0]))  # W·β = 1·1 + 10·(−1)
    assert torch.equal(norm.weight, torch.ones(2)) and torch.equal(norm.bias, torch.zeros(2))
    assert torch.allclose(linear(norm(x)), expected)


def test_online_rotation_identities():
    torch.manual_seed(1)
    x = torch.randn(5, 24)
    heads = random_hadamard(4)
    assert torch.allclose(apply_heads(x.double(), heads), x.double() @ torch.kron(heads, torch.eye(6, dtype=F64)))
    m, n = random_hadamard(2), random_hadamard(12)
    assert torch.allclose(apply_kronecker(x.double(), m, n), x.double() @ torch.kron(m, n))


def test_kronecker_factors():
    assert kronecker_factors(128, 4) == (8, 16)
    assert kronecker_factors(704, 4) == (16, 44)  # the demo LM's intermediate size
    assert kronecker_factors(18944, 4) == (128, 148)  # Qwen2-7B: 148 = 2·(73+1), Paley II
    with pytest.raises(ConfigError, match="down_proj_online_layers"):
        kronecker_factors(7 * 1031, 1)
