"""The histogram observer: every calibration batch counts, and the chosen range minimises the real error."""

from __future__ import annotations

import logging

import pytest
import torch

from modelslim_core.quant.histogram import BINS, HistogramObserver
from modelslim_core.quant.int_affine import compute_qparams, fake_quantize
from modelslim_core.quant.minmax import MinMaxObserver


def heavy_tailed_batches(seed: int = 0) -> list[torch.Tensor]:
    """Student-t (3 degrees of freedom) activations whose spread differs per batch: a long, sparse tail."""
    torch.manual_seed(seed)
    student = torch.distributions.StudentT(torch.tensor(3.0))
    return [student.sample((8, 400)) * scale + 0.3 for scale in (0.5, 2.0, 1.0, 0.7)] + [torch.randn(4, 10)]


def observe(observer, batches):
    for batch in batches:
        observer.update(batch)
    return observer


def mse(x: torch.Tensor, low, high, symmetric: bool) -> torch.Tensor:
    """Real quantization MSE of x for each candidate range (low/high scalars or 1-D tensors)."""
    low, high = torch.as_tensor(low).reshape(-1, 1), torch.as_tensor(high).reshape(-1, 1)
    scale, offset = compute_qparams(low, high, 8, symmetric)
    return (fake_quantize(x[None, :], scale, offset, 8) - x).pow(2).mean(dim=1)


def brute_force_best(x: torch.Tensor, symmetric: bool) -> float:
    """The lowest real MSE over a dense grid of clipping ranges."""
    fractions = torch.linspace(0.2, 1.0, 60)
    if symmetric:
        amax = x.abs().max()
        return mse(x, -amax * fractions, amax * fractions, True).min().item()
    low, high = torch.meshgrid(x.min() * fractions, x.max() * fractions, indexing="ij")
    return mse(x, low.flatten(), high.flatten(), False).min().item()


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_search_finds_the_error_minimising_range_and_beats_minmax(symmetric):
    batches = heavy_tailed_batches()
    x = torch.cat([b.flatten() for b in batches])
    low, high = observe(HistogramObserver(8, symmetric), batches).range()
    minmax_low, minmax_high = observe(MinMaxObserver(), batches).range()
    assert minmax_low <= low and high <= max(minmax_high, -minmax_low)  # clipped, never widened
    found = mse(x, low, high, symmetric).item()
    assert found < 0.99 * mse(x, minmax_low, minmax_high, symmetric).item()
    assert found <= 1.02 * brute_force_best(x, symmetric)  # as good as an exhaustive search of real errors
    if symmetric:
        assert low == -high


def test_expected_error_predicts_the_real_quantization_error():
    batches = heavy_tailed_batches()
    x = torch.cat([b.flatten() for b in batches])
    histogram = observe(HistogramObserver(8, False), batches)
    for low, high in ((-3.0, 5.0), (-8.0, 12.0), (0.0, 2.0)):
        predicted = histogram.expected_error(torch.tensor([low], dtype=torch.float64), torch.tensor([high], dtype=torch.float64))
        actual = mse(x, low, high, False).item() * x.numel()
        assert predicted.item() == pytest.approx(actual, rel=0.05)


def test_every_batch_counts_whatever_the_order():
    batches = heavy_tailed_batches()
    forward = observe(HistogramObserver(8, False), batches)
    backward = observe(HistogramObserver(8, False), batches[::-1])
    assert forward.hist.sum().item() == pytest.approx(sum(b.numel() for b in batches))
    assert backward.hist.sum().item() == pytest.approx(sum(b.numel() for b in batches))
    assert (forward.lo, forward.hi) == (backward.lo, backward.hi)  # the running range covers every batch
    (f_low, f_high), (b_low, b_high) = forward.range(), backward.range()
    width = (forward.hi - forward.lo) / BINS
    assert abs(f_low - b_low) <= 3 * width and abs(f_high - b_high) <= 3 * width  # re-binning only blurs by a bin
    # the reference's result is the last batch's range; here a wide first batch still shapes the range
    last_only = observe(HistogramObserver(8, False), batches[-1:]).range()
    assert f_high > 2 * last_only[1]


def test_growing_the_range_keeps_the_mass_where_it_was():
    observer = HistogramObserver(8, False)
    observer.update(torch.linspace(0.0, 1.0, 10001))
    observer.update(torch.tensor([-3.0, 3.0]))
    edges = torch.linspace(observer.lo, observer.hi, BINS + 1, dtype=torch.float64)
    inside = (edges[:-1] >= -1e-9) & (edges[1:] <= 1.0 + 1e-9)
    assert observer.hist.sum().item() == pytest.approx(10003)
    assert observer.hist[inside].sum().item() == pytest.approx(10001, rel=0.01)


def test_constant_input_and_non_finite_values(caplog):
    constant = observe(HistogramObserver(8, False), [torch.full((5,), 2.5), torch.full((3,), 2.5)])
    assert [v.item() for v in constant.range()] == [2.5, 2.5]
    grown = observe(HistogramObserver(8, False), [torch.full((5,), 2.5), torch.tensor([-1.0, 4.0])])
    assert grown.hist.sum().item() == 7 and grown.range()[0] < 0
    with caplog.at_level(logging.WARNING):
        observer = observe(HistogramObserver(8, True), [torch.tensor([1.0, float("nan"), -2.0, float("inf")])])
    assert "NaN/Inf" in caplog.text
    assert observer.hist.sum().item() == 2
    with pytest.raises(RuntimeError, match="saw no data"):
        HistogramObserver(8, True).range()
