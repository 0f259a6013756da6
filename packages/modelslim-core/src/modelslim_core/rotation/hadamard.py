"""Hadamard matrices and the orthogonal rotations QuaRot builds from them.

A Hadamard matrix H of order n has ±1 entries and H·Hᵀ = n·I, so H/√n is orthogonal and spreads every
input channel evenly over all outputs: one outlier channel becomes n channels of 1/√n its size, which is
what makes activations easy to quantize after rotation.

Orders we construct (entries exact, in float64):
- powers of two: Sylvester doubling H_2n = [[H, H], [H, −H]];
- n = q + 1 with q ≡ 3 (mod 4) a prime power: Paley I;
- n = 2(q + 1) with q ≡ 1 (mod 4) a prime power: Paley II;
- n = 2m when order m is constructible: one Sylvester doubling.
This covers every k·2^m the reference ships tables for (k ∈ {12, 20, 28, 36, 40, 52, 60, 76, 108, 136, 140,
160, 200}) except 156 and 172 themselves (their doubles are Paley orders), which need Williamson-type
matrices; those sizes get a clear error that suggests `block_size`. Sizes with no Hadamard matrix at all (not 1, 2 or a multiple of 4) likewise.
"""

from __future__ import annotations

import functools
import itertools

import torch

from modelslim_core.errors import ConfigError

#: The reference seeds every random rotation with this value, so all ranks and all layers agree.
ROTATION_SEED = 1234


# --- finite fields (for Paley constructions over prime powers) -------------------------------------------
def _prime_power(q: int) -> tuple[int, int] | None:
    """(p, k) with q = p^k for a prime p, or None."""
    if q < 2:
        return None
    for p in range(2, q + 1):
        if q % p == 0:
            k, rest = 0, q
            while rest % p == 0:
                rest //= p
                k += 1
            return (p, k) if rest == 1 else None
    return None


def _poly_mulmod(a: tuple[int, ...], b: tuple[int, ...], modulus: tuple[int, ...], p: int) -> tuple[int, ...]:
    """Product of two polynomials over GF(p) (coefficient tuples, lowest degree first) modulo a monic polynomial."""
    k = len(modulus) - 1
    prod = [0] * (2 * k - 1)
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            prod[i + j] = (prod[i + j] + x * y) % p
    for deg in range(len(prod) - 1, k - 1, -1):  # reduce: x^k = −(lower coefficients of the modulus)
        coef = prod[deg]
        if coef:
            for i in range(k):
                prod[deg - k + i] = (prod[deg - k + i] - coef * modulus[i]) % p
            prod[deg] = 0
    return tuple(prod[:k])


def _irreducible(p: int, k: int) -> tuple[int, ...]:
    """A monic irreducible polynomial of degree k over GF(p) (brute force: q ≤ a few hundred here)."""
    for coefs in itertools.product(range(p), repeat=k):
        modulus = (*coefs, 1)
        if coefs[0] == 0:
            continue
        elements = list(itertools.product(range(p), repeat=k))
        zero = (0,) * k
        # irreducible <=> the quotient ring has no zero divisors
        if all(_poly_mulmod(a, b, modulus, p) != zero for a in elements if a != zero for b in elements if b != zero):
            return modulus
    raise AssertionError(f"no irreducible polynomial of degree {k} over GF({p})")


def _quadratic_character(q: int) -> torch.Tensor:
    """χ(e_j − e_i) for all element pairs of GF(q): the Jacobsthal matrix (0 on the diagonal, ±1 elsewhere)."""
    p, k = _prime_power(q)
    elements = list(itertools.product(range(p), repeat=k))
    index = {e: i for i, e in enumerate(elements)}
    modulus = _irreducible(p, k) if k > 1 else (0, 1)
    squares = {_poly_mulmod(e, e, modulus, p) if k > 1 else ((e[0] * e[0]) % p,) for e in elements}
    zero = (0,) * k
    chi = {e: 0 if e == zero else (1 if e in squares else -1) for e in elements}
    jac = torch.zeros(q, q, dtype=torch.float64)
    for a in elements:
        for b in elements:
            diff = tuple((y - x) % p for x, y in zip(a, b))
            jac[index[a], index[b]] = chi[diff]
    return jac


def _paley_one(q: int) -> torch.Tensor:
    """Order q + 1 for q ≡ 3 (mod 4): H = I + S with S the skew 'bordered Jacobsthal' matrix."""
    jac = _quadratic_character(q)
    s = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = jac
    return torch.eye(q + 1, dtype=torch.float64) + s


def _paley_two(q: int) -> torch.Tensor:
    """Order 2(q + 1) for q ≡ 1 (mod 4): the symmetric bordered Jacobsthal matrix with 2×2 blocks substituted."""
    jac = _quadratic_character(q)
    c = torch.zeros(q + 1, q + 1, dtype=torch.float64)
    c[0, 1:] = 1
    c[1:, 0] = 1
    c[1:, 1:] = jac
    zero_block = torch.tensor([[1.0, -1.0], [-1.0, -1.0]], dtype=torch.float64)
    unit_block = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    return torch.kron((c == 0).double(), zero_block) + torch.kron(c, unit_block)


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _paley(n: int) -> torch.Tensor | None:
    """Order n directly from a Paley construction, when one applies."""
    if n % 4:
        return None
    if _prime_power(n - 1) is not None and (n - 1) % 4 == 3:
        return _paley_one(n - 1)
    if _prime_power(n // 2 - 1) is not None and (n // 2 - 1) % 4 == 1:
        return _paley_two(n // 2 - 1)
    return None


@functools.lru_cache(maxsize=None)
def _construct(n: int) -> torch.Tensor | None:
    """Smallest core first: n = core·2^m with the core from Paley (or 1), then Sylvester doubling (a Kronecker
    product with H_2^m), so big orders never run the O(q²) Paley construction on a big field."""
    if n < 1:
        return None
    twos = 1
    while n % (twos * 2) == 0:
        twos *= 2
    sylvester = torch.ones(1, 1, dtype=torch.float64)
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    powers = [sylvester]
    while powers[-1].shape[0] < twos:
        powers.append(torch.kron(h2, powers[-1]))
    for power in reversed(powers):  # biggest power of two first = smallest core
        core_order = n // power.shape[0]
        core = torch.ones(1, 1, dtype=torch.float64) if core_order == 1 else _paley(core_order)
        if core is not None:
            return torch.kron(power, core)
    return None


def has_hadamard(n: int) -> bool:
    """Whether `hadamard_matrix(n)` can build order n."""
    return n >= 1 and _construct(n) is not None


def hadamard_matrix(n: int, what: str = "rotation") -> torch.Tensor:
    """The ±1 Hadamard matrix of order n (float64); a ConfigError naming `what` when we cannot build it."""
    matrix = _construct(n) if n >= 1 else None
    if matrix is None:
        raise ConfigError(
            f"the {what} needs a Hadamard matrix of order {n}, which cannot be constructed here (orders are 1, 2, "
            "powers of two and multiples of 4 reachable by the Paley constructions and doubling; e.g. 92, 156 and "
            "172 are not).",
            "set `block_size` to a power of two that divides the size, so the rotation is block-diagonal.",
        )
    return matrix.clone()


def random_signs(n: int, seed: int = ROTATION_SEED) -> torch.Tensor:
    """±1 diagonal from a freshly seeded generator: every rank and every call gets the same signs."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2, (n,), generator=generator, dtype=torch.int64).double() * 2 - 1


def random_hadamard(n: int, seed: int = ROTATION_SEED, what: str = "rotation") -> torch.Tensor:
    """Orthogonal Q = diag(±1)·H_n/√n in float64."""
    return random_signs(n, seed)[:, None] * hadamard_matrix(n, what) / n**0.5


def random_orthogonal(n: int, seed: int = ROTATION_SEED) -> torch.Tensor:
    """A Haar-random orthogonal matrix (QR of a Gaussian, signs fixed) for sizes without a Hadamard matrix."""
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, n, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :]


def block_diagonal(block: torch.Tensor, size: int) -> torch.Tensor:
    """`block` repeated along the diagonal to fill `size` (size must be a multiple of the block's order)."""
    n = block.shape[0]
    if size % n:
        raise ValueError(f"a {n}×{n} block cannot tile size {size}")
    return torch.block_diag(*([block] * (size // n))) if size != n else block


def hidden_rotation(size: int, block_size: int, seed: int = ROTATION_SEED, what: str = "hidden-size rotation") -> torch.Tensor:
    """The rotation of a residual stream of `size` channels: full random Hadamard, or block-diagonal copies of a
    `block_size` one (cheaper online, and the only choice when no order-`size` Hadamard exists)."""
    if block_size == -1 or block_size >= size:
        return random_hadamard(size, seed, what)
    if size % block_size:
        raise ConfigError(
            f"block_size {block_size} does not divide the {what} size {size}.",
            f"choose a power of two that divides {size}, or -1 for one full-size rotation.",
        )
    return block_diagonal(random_hadamard(block_size, seed, what), size)
