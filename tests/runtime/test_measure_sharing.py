"""Siblings (q/k/v, gate/up) share eval's input-side work: one input-side fit per sample and one measured
kernel input, each bitwise what every linear computes on its own, recomputed when anything differs."""

from __future__ import annotations

import torch

from modelslim.app.layer_compare import FrameFitter, _Frame, _SharedKernelInput, _same_bits


def _calls(x: torch.Tensor, weights: dict[str, torch.Tensor], shared: bool) -> dict[str, list]:
    """Captured (input, output) calls of linears fed x: the same input object when shared, else a copy each."""
    return {name: [((x if shared else x.clone()), x @ w.T)] for name, w in weights.items()}


def test_siblings_fitted_on_one_input_get_the_frames_each_gets_alone() -> None:
    generator = torch.Generator().manual_seed(0)
    x_f = torch.randn(1, 300, 16, generator=generator)
    x_q = x_f * (torch.rand(16, generator=generator) + 0.5) + 0.01  # a smoothed input, not the float one
    weights = {name: torch.randn(8, 16, generator=generator) for name in ("q", "k", "v")}
    rotation = torch.linalg.qr(torch.randn(16, 16, generator=generator))[0]
    frames = []
    for shared in (True, False):
        fitter = FrameFitter(rotation)
        for _ in range(2):  # two samples
            fitter.add(_calls(x_f, weights, shared), _calls(x_q, weights, shared))
        frames.append(fitter.frames(None, None, {}, []))
    for name in weights:
        for a, b in zip(vars(frames[0][name]).values(), vars(frames[1][name]).values(), strict=True):
            assert (a is None and b is None) or torch.equal(a.view(torch.int64), b.view(torch.int64)), name


def _frame(scale: float, shift: float) -> _Frame:
    return _Frame(None, torch.full((4,), scale, dtype=torch.float64), torch.full((4,), shift, dtype=torch.float64),
                  None, torch.ones(3, dtype=torch.float64))


def test_the_measured_input_is_shared_only_for_the_same_input_and_input_side() -> None:
    fed = _SharedKernelInput(rows=2)
    x = torch.randn(1, 6, 4)
    first = fed(x, _frame(2.0, 0.5))
    assert torch.equal(first, (x[:, ::3].double() * 2.0 + 0.5).float())
    assert fed(x, _frame(2.0, 0.5)) is first  # a sibling: equal bits, another frame object
    assert fed(x, _frame(2.0, -0.0)) is not fed(x, _frame(2.0, 0.0))  # -0.0 and 0.0 differ in bits
    assert fed(x.clone(), _frame(2.0, 0.0)) is not fed(x, _frame(2.0, 0.0))
    kept = fed(x, _frame(2.0, 0.0))
    x.mul_(3.0)  # written in place: recomputed
    again = fed(x, _frame(2.0, 0.0))
    assert again is not kept and torch.equal(again, (x[:, ::3].double() * 2.0).float())
    plain = fed(x, None)
    assert torch.equal(plain, x[:, ::3]) and fed(x, None) is plain and fed(x, _frame(1.0, 0.0)) is not plain


def test_same_bits_tells_negative_zero_in_every_float_width() -> None:
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        zero, negative_zero = torch.zeros(3, dtype=dtype), torch.tensor([0.0, -0.0, 0.0], dtype=dtype)
        assert _same_bits(zero, zero.clone())
        assert not _same_bits(zero, negative_zero)
    assert _same_bits(None, None) and not _same_bits(None, torch.zeros(1))
