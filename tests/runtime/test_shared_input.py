"""One quantization per input shared by sibling linears (q/k/v, gate/up): reused only for the very same,
unmodified tensor and quantization key, and bitwise what each linear computes on its own."""

from __future__ import annotations

import torch

from modelslim_core.formats.kernels import shared_input
from modelslim_core.formats.kernels.dynamic_int import DynamicIntLinear
from modelslim_core.formats.kernels.shared_input import forget, reuse
from modelslim_core.formats.kernels.w8a8 import W8A8StaticLinear


def test_reuse_keeps_the_last_result_for_the_same_unmodified_input_and_key() -> None:
    calls = []

    def compute(t):
        calls.append(t)
        return t * 2

    forget()
    x = torch.ones(2, 3)
    first = reuse(x, "k", compute)
    assert reuse(x, "k", compute) is first and len(calls) == 1  # a sibling: shared
    assert reuse(x.clone(), "k", compute) is not first  # an equal but other tensor: recomputed
    x.add_(1.0)  # written in place: its version moves on
    assert torch.equal(reuse(x, "k", compute), torch.full((2, 3), 4.0))
    assert reuse(x, "other key", compute) is not reuse(x, "k", compute)
    view = x[0]
    reuse(x, "k", compute)
    count = len(calls)
    view.zero_()  # a write through a view bumps the base's version too
    assert torch.equal(reuse(x, "k", compute)[0], torch.zeros(3)) and len(calls) == count + 1
    with torch.inference_mode():
        frozen = torch.ones(2)
        assert reuse(frozen, "k", compute) is not reuse(frozen, "k", compute)  # no version counter: never kept
    forget()
    assert shared_input._LAST.source is None


def _dynamic(seed: int, groups: int, bits: int = 8) -> DynamicIntLinear:
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(-128, 128, (24, 128), generator=generator, dtype=torch.int8)
    scale = torch.rand(24, groups, generator=generator) * 0.01 + 1e-3
    offset = torch.randint(-3, 4, (24, groups), generator=generator).float()
    return DynamicIntLinear(codes, scale, offset, torch.randn(24, generator=generator), bits)


def _static(seed: int, input_scale: float, input_offset: float) -> W8A8StaticLinear:
    generator = torch.Generator().manual_seed(seed)
    return W8A8StaticLinear({
        "weight": torch.randint(-128, 128, (24, 128), generator=generator, dtype=torch.int8),
        "quant_bias": torch.randint(-1000, 1000, (24,), generator=generator, dtype=torch.int32),
        "input_scale": torch.tensor([input_scale]), "input_offset": torch.tensor([input_offset]),
        "deq_scale": torch.rand(24, generator=generator) * 1e-3})


def test_siblings_sharing_a_quantization_compute_the_bits_each_computes_alone() -> None:
    """q/k/v-like siblings (dynamic 8-bit per channel and per group, dynamic 4-bit, static with the same and
    with other input scales/offsets, -0.0 offset included) called in turn on one input give bitwise what
    each computes alone on a fresh copy."""
    siblings = [_dynamic(1, 1), _dynamic(2, 4), _dynamic(3, 1, bits=4), _dynamic(4, 1),
                _static(5, 0.02, 3.0), _static(6, 0.02, 3.0), _static(7, 0.03, 3.0), _static(8, 0.02, 0.0),
                _static(9, 0.02, -0.0)]
    x = torch.randn(2, 7, 128) * 2
    x[0, 0] = 0.0
    forget()
    shared = [kernel(x) for kernel in siblings]
    alone = []
    for kernel in siblings:
        forget()
        alone.append(kernel(x.clone()))
    for index, (a, b) in enumerate(zip(shared, alone, strict=True)):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32)), index


def test_dynamic_siblings_quantize_their_input_once(monkeypatch) -> None:
    import modelslim_core.formats.kernels.dynamic_int as dynamic_int

    counted = []
    real = dynamic_int.quantize_per_token
    monkeypatch.setattr(dynamic_int, "quantize_per_token", lambda t, bits=8: counted.append(bits) or real(t, bits))
    x = torch.randn(5, 128)
    forget()
    for kernel in (_dynamic(1, 1), _dynamic(2, 4), _dynamic(4, 1)):  # per channel and per group: one key
        kernel(x)
    assert counted == [8]
    _dynamic(3, 1, bits=4)(x)  # other bits: its own codes
    _dynamic(1, 1)(x + 0)  # another input
    assert counted == [8, 4, 8]
