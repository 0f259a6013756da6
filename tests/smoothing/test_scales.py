"""Hand-computed cases of the smoothing formulas, the shift, the KV-group handling and config checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from modelslim_core.errors import ConfigError
from modelslim_core.models.subgraphs import Subgraph
from modelslim_core.processors.awq import common_ancestor, ratio_scale
from modelslim_core.protocol.spec import parse_processor_list
from modelslim_core.smoothing.closed_form import closed_form_scale
from modelslim_core.smoothing.fusion import apply_scale, apply_shift
from modelslim_core.smoothing.search import best_on_grid
from modelslim_core.smoothing.stats import ChannelStats


class Norm(nn.Module):
    """An RMSNorm stand-in without bias: y = weight · x (the normalisation itself does not matter here)."""

    def __init__(self, weight):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(weight))

    def forward(self, x):
        return self.weight * x


def linear(weight, bias=None) -> nn.Linear:
    weight = torch.tensor(weight)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    layer.weight.data.copy_(weight)
    if bias is not None:
        layer.bias.data.copy_(torch.tensor(bias))
    return layer.requires_grad_(False)


def smooth_closed_form(subgraph: Subgraph, stats: ChannelStats, **options) -> None:
    """What smooth_quant / iter_smooth do to one subgraph: the closed-form scale (and shift), fused."""
    scale, shift = closed_form_scale(subgraph, stats, **options)
    if shift is not None:
        apply_shift(subgraph, shift)
    apply_scale(subgraph, scale)


def norm_linear(norm, *targets) -> Subgraph:
    return Subgraph("norm-linear", "l.norm", norm, tuple(f"l.t{i}" for i in range(len(targets))), targets)


def stats_of(rows) -> ChannelStats:
    stats = ChannelStats(len(rows[0]))
    stats.update(torch.tensor(rows))
    return stats


def test_smooth_quant_scale_is_act_max_to_alpha_over_weight_max_to_one_minus_alpha():
    # activations max|x| = [4, 1, 0.25]; weight column max over BOTH linears = [1, 4, 0.5]
    norm = Norm([1.0, 1.0, 1.0])
    first, second = linear([[1.0, -4.0, 0.1]]), linear([[-0.5, 2.0, -0.5], [0.2, 1.0, 0.3]])
    stats = stats_of([[4.0, -1.0, 0.25], [-2.0, 0.5, 0.0]])
    smooth_closed_form(norm_linear(norm, first, second), stats, alpha=0.5, floor=1e-5, symmetric=True)
    expected = torch.tensor([math.sqrt(4 / 1), math.sqrt(1 / 4), math.sqrt(0.25 / 0.5)])  # [2, 0.5, 0.7071]
    torch.testing.assert_close(norm.weight.data, 1 / expected)
    torch.testing.assert_close(first.weight.data, torch.tensor([[1.0, -4.0, 0.1]]) * expected)
    torch.testing.assert_close(second.weight.data[1], torch.tensor([0.2, 1.0, 0.3]) * expected)


def test_scale_floor_and_dead_channels():
    # channel 0: tiny activation, huge weight -> below the floor; channel 1 never active -> left alone (s = 1)
    norm = Norm([1.0, 1.0])
    target = linear([[1e6, 1.0]])
    stats = stats_of([[1e-6, 0.0]])
    smooth_closed_form(norm_linear(norm, target), stats, alpha=0.5, floor=1e-2, symmetric=True)
    torch.testing.assert_close(norm.weight.data, torch.tensor([1 / 1e-2, 1.0]))


def test_iter_smooth_shift_centres_the_norm_output_and_keeps_the_function():
    norm = Norm([2.0, 1.0])
    target = linear([[1.0, 2.0], [-1.0, 0.5]])  # no bias yet: the shift creates one
    x = torch.tensor([[-0.5, 1.0], [1.5, 3.0], [0.0, 2.0]])
    before = target(norm(x))
    norm_out = norm(x)  # channel 0 in [-1, 3], channel 1 in [1, 3]
    stats = stats_of(norm_out.tolist())
    alpha = 0.9
    smooth_closed_form(norm_linear(norm, target), stats, alpha=alpha, floor=1e-5, symmetric=False)
    shift = torch.tensor([1.0, 2.0])  # (max + min) / 2
    half_range = torch.tensor([2.0, 1.0])  # (max - min) / 2
    w_max = torch.tensor([1.0, 2.0])
    s = half_range**alpha / w_max ** (1 - alpha)
    torch.testing.assert_close(norm.bias.data, -shift / s)
    torch.testing.assert_close(target.bias.data, torch.tensor([[1.0, 2.0], [-1.0, 0.5]]) @ shift)
    torch.testing.assert_close(norm.weight.data, torch.tensor([2.0, 1.0]) / s)
    smoothed = norm(x)
    torch.testing.assert_close(smoothed.amax(0) + smoothed.amin(0), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(target(smoothed), before)


def _ov(group_method: str):
    torch.manual_seed(0)
    heads, kv, dim = 4, 2, 2
    v = linear(torch.randn(kv * dim, 3).tolist(), torch.randn(kv * dim).tolist())
    o = linear(torch.randn(5, heads * dim).tolist())
    subgraph = Subgraph("ov", "l.v_proj", v, ("l.o_proj",), (o,), group_method, heads, kv)
    return v, o, subgraph


def _attention_like(v, o, x):
    """o(repeat_kv(v(x))): query head h reads KV head h // (heads / kv), as transformers' repeat_kv does."""
    values = v(x).reshape(x.shape[0], 2, 1, 2).expand(x.shape[0], 2, 2, 2).reshape(x.shape[0], 8)
    return o(values)


@pytest.mark.parametrize("group_method", ["max", "mean"])
def test_ov_scales_are_shared_by_the_query_heads_of_one_kv_head(group_method):
    v, o, subgraph = _ov(group_method)
    x = torch.randn(6, 3)
    before = _attention_like(v, o, x)
    o_weight, v_weight = o.weight.data.clone(), v.weight.data.clone()
    inputs = v(x).reshape(6, 2, 1, 2).expand(6, 2, 2, 2).reshape(6, 8)
    smooth_closed_form(subgraph, stats_of(inputs.tolist()), alpha=0.5, floor=1e-5, symmetric=False)  # ov: no shift
    scale = (o.weight.data / o_weight)[0].reshape(2, 2, 2)  # [kv, queries per kv, head_dim]
    torch.testing.assert_close(scale[:, 0], scale[:, 1])
    a = inputs.abs().amax(0).reshape(2, 2, 2)
    w = o_weight.abs().amax(0).reshape(2, 2, 2)
    if group_method == "max":
        expected = (a.amax(1) ** 0.5) / (w.amax(1) ** 0.5)
    else:
        expected = ((a**0.5) / (w**0.5)).mean(1)
    torch.testing.assert_close(scale[:, 0], expected)
    torch.testing.assert_close(v.weight.data, v_weight / expected.reshape(-1, 1))  # v row = its KV group's scale
    assert o.bias is None  # ov pairs are never shifted
    torch.testing.assert_close(_attention_like(v, o, x), before)


def test_awq_ratio_scale_is_normalised_and_finite():
    scale = ratio_scale(torch.tensor([4.0, 1.0, 0.0]), 0.5)  # [2, 1, 1e-4 floor] / sqrt(2 * 1e-4)
    torch.testing.assert_close(scale, torch.tensor([2.0, 1.0, 1e-4]) / math.sqrt(2e-4))
    assert common_ancestor(("m.l.0.self_attn.q_proj", "m.l.0.self_attn.v_proj")) == "m.l.0.self_attn"
    assert common_ancestor(("m.l.0.mlp.down_proj",)) == "m.l.0.mlp.down_proj"


def test_grid_ties_go_to_the_later_value():
    errors = {0.0: 3.0, 0.5: 1.0, 1.0: 1.0}
    assert best_on_grid(errors.__getitem__, (0.0, 0.5, 1.0)) == (1.0, 1.0)
    assert best_on_grid(errors.__getitem__, (0.0,), incumbent=(0.7, 2.0)) == (0.7, 2.0)


@pytest.mark.parametrize("item, message", [
    ({"type": "iter_smooth", "alpha": 1}, "spec.process[0].alpha: must be a float strictly between 0 and 1"),
    ({"type": "smooth_quant", "alpha": 1.0}, "spec.process[0].alpha: must be strictly between 0 and 1"),
    ({"type": "iter_smooth", "enable_subgraph_type": ["norm-linear", "qkv"]}, "spec.process[0].enable_subgraph_type[1]"),
    ({"type": "flex_awq_ssz"}, "spec.process[0].qconfig: this field is required"),
    ({"type": "awq", "weight_qconfig": {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "gptq"}},
     "needs calibration data"),
    ({"type": "awq", "n_grid": 0, "weight_qconfig": {"scope": "per_channel", "dtype": "int8", "symmetric": True,
                                                       "method": "minmax"}}, "spec.process[0].n_grid"),
])
def test_bad_smoothing_fields_name_their_yaml_path(item, message):
    with pytest.raises(ConfigError) as caught:
        parse_processor_list([item], "spec.process")
    assert message in caught.value.message


def test_statistics_without_mean_abs_keep_min_and_max_only():
    """Closed-form smoothing reads min / max only: the float64 sum of |x| is skipped, and asking for it fails."""
    rows = torch.tensor([[4.0, -1.0, 0.25], [-2.0, 0.5, 0.0]])
    lean, full = ChannelStats(3, mean_abs=False), ChannelStats(3)
    lean.update(rows)
    full.update(rows)
    assert lean.abs_sum is None and torch.equal(lean.absmax, full.absmax) and torch.equal(lean.center, full.center)
    torch.testing.assert_close(full.mean_abs, torch.tensor([3.0, 0.75, 0.125]))
    with pytest.raises(RuntimeError, match="mean_abs=False"):
        lean.mean_abs
