"""AutoRound's tunable linear and its SignSGD loop (quant/autoround.py), on small hand-built blocks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelslim_core.protocol.qconfig import QConfig
from modelslim_core.quant.autoround import BATCH_SIZE, SignRoundGrid, SignRoundLinear, tune_signround
from modelslim_core.quant.minmax import MinMaxIntWeight


@pytest.mark.parametrize("bits,symmetric,group_size", [(4, True, 0), (4, False, 0), (8, True, 16), (4, False, 16)])
def test_the_untuned_grid_is_minmax_and_export_matches_the_simulation(bits, symmetric, group_size):
    torch.manual_seed(0)
    linear = nn.Linear(32, 8)
    layer = SignRoundLinear(linear, SignRoundGrid(bits, symmetric, group_size))
    scope = "per_group" if group_size else "per_channel"
    ext = {"group_size": group_size} if group_size else {}
    qconfig = QConfig(dtype=f"int{bits}", scope=scope, symmetric=symmetric, method="minmax", ext=ext)
    minmax = MinMaxIntWeight(qconfig).quantize(linear.weight)
    exported = layer.export()
    assert torch.equal(exported.codes, minmax.codes)
    assert torch.allclose(exported.scale, minmax.scale) and torch.equal(exported.offset, minmax.offset)
    with torch.no_grad():
        layer.rounding.uniform_(-0.5, 0.5)
        layer.min_scale.uniform_(0.6, 1.0)
        layer.max_scale.uniform_(0.6, 1.0)
    assert torch.equal(layer.export().dequantize(), layer.quantized_weight().detach())


def block_and_data(seed: int, samples: int):
    """A two-linear MLP block and calibration inputs with correlated channels, plus its float outputs."""
    generator = torch.Generator().manual_seed(seed)
    block = nn.Sequential(nn.Linear(32, 64), nn.SiLU(), nn.Linear(64, 32))
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    block.requires_grad_(False)
    mixing = torch.randn(6, 32, generator=generator)
    inputs = [torch.randn(20, 6, generator=generator) @ mixing for _ in range(samples)]
    with torch.no_grad():
        targets = [block(x) for x in inputs]
    return block, inputs, targets


def tuned(seed: int, samples: int, iters: int, **tuning) -> tuple[list[SignRoundLinear], object, nn.Module]:
    block, inputs, targets = block_and_data(seed, samples)
    layers = []
    for index in (0, 2):
        layer = SignRoundLinear(block[index], SignRoundGrid(4, True), **tuning)
        block[index] = layer
        layers.append(layer)
    with torch.no_grad():  # the pipeline's state: tuning must enable gradients itself
        result = tune_signround(lambda i: block(inputs[i]), targets, layers, iters, seed=3)
    return layers, result, block


def test_tuning_lowers_the_block_output_error_against_minmax():
    layers, result, _ = tuned(0, 6, 40)
    assert result.best_loss < 0.6 * result.initial_loss, result
    assert result.best_iteration > 0


def test_tuning_is_deterministic_with_many_samples_too():
    for samples in (6, BATCH_SIZE + 5):
        first, result_a, _ = tuned(1, samples, 15)
        second, result_b, _ = tuned(1, samples, 15)
        assert result_a == result_b
        for a, b in zip(first, second):
            assert torch.equal(a.export().codes, b.export().codes)
            assert torch.equal(a.export().scale, b.export().scale)


def test_parameters_stay_in_range_and_disabled_tuning_keeps_minmax():
    layers, _, _ = tuned(2, 6, 25)
    for layer in layers:
        assert layer.rounding.abs().max() <= 0.5
        assert 0 <= layer.min_scale.min() and layer.max_scale.max() <= 1
    frozen, result, _ = tuned(2, 6, 25, tune_rounding=False, tune_range=False)
    assert result.best_loss == result.initial_loss and result.best_iteration == 0
    assert all(not layer.tunable() for layer in frozen)


def test_only_rounding_or_only_range_tuning_still_helps():
    _, rounding_only, _ = tuned(0, 6, 40, tune_range=False)
    _, range_only, _ = tuned(0, 6, 40, tune_rounding=False)
    assert rounding_only.best_loss < rounding_only.initial_loss
    assert range_only.best_loss < range_only.initial_loss
