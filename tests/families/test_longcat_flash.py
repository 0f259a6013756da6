"""LongCat-Flash: zero-computation (identity) experts, dual sub-layers, router kept float (regression: the
IndexError in split_fused_experts when the router's expert count exceeds the experts with weights)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelslim_core.models.moe import PerExpertMoE
from modelslim_core.models.resolve import create_adapter
from tests.families._helpers import dynamic_w8a8_config, float_relative_error, quantize, saved
from tests.families._tiny import make_family_model


@pytest.fixture(scope="module")
def longcat(tmp_path_factory):
    return make_family_model(tmp_path_factory.mktemp("longcat") / "model", "longcat_flash")


def test_identity_experts_are_split_and_computed(longcat):
    adapter = create_adapter("LongCat-Flash-Chat", longcat, False)
    assert adapter.family == "longcat_flash"
    model = adapter.load_model(torch.float32)
    experts = model.model.layers[0].mlp.experts
    assert isinstance(experts, PerExpertMoE) and len(experts) == 4 and experts.identity_experts == 2
    hidden = torch.randn(3, 64)
    index = torch.tensor([[4, 0], [5, 1], [2, 3]])  # tokens 0 and 1 pick an identity expert
    weights = torch.tensor([[0.5, 0.25], [2.0, 1.0], [1.0, 1.0]])
    out = experts(hidden, index, weights)
    expected = torch.stack([0.5 * hidden[0] + 0.25 * experts[0](hidden[0]), 2.0 * hidden[1] + experts[1](hidden[1]),
                            experts[2](hidden[2]) + experts[3](hidden[2])])
    assert torch.allclose(out, expected, atol=1e-6)
    sites = [s.name for u in adapter.units(model) for s in adapter.linear_sites(u)]
    assert not [s for s in sites if "router" in s]  # the router stays float
    assert "model.layers.0.self_attn.1.q_b_proj" in sites and "model.layers.1.mlps.0.down_proj" in sites


@pytest.mark.parametrize("runner", ["model_wise", "layer_wise"])
def test_longcat_quantizes_and_reloads(longcat, tmp_path, runner):
    out = quantize(longcat, tmp_path / "out", "LongCat-Flash-Chat", dynamic_w8a8_config(tmp_path, runner))
    description, metas = saved(out)
    assert description["model.layers.0.mlp.router.classifier.weight"] == "FLOAT"
    assert description["model.layers.1.mlp.experts.3.down_proj.weight"] == "W8A8_DYNAMIC"
    assert not [n for n in metas if ".experts.4." in n or ".experts.5." in n]  # identity experts have no weights
    assert float_relative_error(longcat, out) < 0.05
