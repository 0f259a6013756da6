"""The per-expert rewrite of fused transformers experts: same outputs, hub names, all-token calibration."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from modelslim_core.models.moe import PerExpertMoE, prepare_moe_model
from modelslim_core.models.moe_report import routing_report, routing_stats
from modelslim_core.models.weights import SourceWeights


@pytest.mark.parametrize("arch", ["qwen3_moe", "deepseek_v3"])
def test_split_experts_compute_what_the_fused_model_computes(tiny_models, arch):
    path = tiny_models(arch, torch.float32)
    fused = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    split = prepare_moe_model(copy.deepcopy(fused))
    ids = torch.randint(0, 200, (2, 12))
    with torch.no_grad():
        torch.testing.assert_close(split(input_ids=ids).logits, fused(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
    # the in-memory names are the checkpoint's names: layer-wise runs read every tensor directly
    assert {n for n, _ in split.named_parameters()} == set(SourceWeights(path).names()) | (
        {"lm_head.weight"} if fused.config.tie_word_embeddings else set())


def test_router_buffer_becomes_a_parameter_with_the_checkpoint_value(tiny_models):
    path = tiny_models("deepseek_v3", torch.float32)
    model = prepare_moe_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32))
    bias = model.get_parameter("model.layers.1.mlp.gate.e_score_correction_bias")
    torch.testing.assert_close(bias.data, SourceWeights(path).read("model.layers.1.mlp.gate.e_score_correction_bias"))
    assert float(bias.abs().sum()) > 0


class _Observer(torch.nn.Module):
    """A linear that records how many rows it saw and marks itself as observing (like CalibratingLinear)."""

    observes_inputs = True

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        self.linear = linear
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return self.linear(x)


def _moe(tiny_models) -> PerExpertMoE:
    model = prepare_moe_model(AutoModelForCausalLM.from_pretrained(tiny_models("qwen3_moe", torch.float32)))
    return model.model.layers[0].mlp.experts


def test_observing_experts_see_every_token_but_output_is_the_routed_one(tiny_models):
    experts = _moe(tiny_models)
    hidden = torch.randn(10, 64)
    index = torch.tensor([[0, 1]] * 10)  # experts 2 and 3 are never chosen
    weights = torch.full((10, 2), 0.5)
    reference = experts(hidden, index, weights)
    for expert in experts:
        expert.up_proj = _Observer(expert.up_proj)
    experts.reset_routing_counts()
    torch.testing.assert_close(experts(hidden, index, weights), reference)
    assert [expert.up_proj.rows for expert in experts] == [10, 10, 10, 10]
    assert experts.routed_tokens == [10, 10, 0, 0]
    stats = routing_stats(experts, "model.layers.0.mlp.experts")[0]
    lines = routing_report(stats)
    assert "routed tokens per expert {0:10, 1:10, 2:0, 3:0}" in lines[0]
    assert "experts [2, 3] received no routed tokens" in lines[1] and "calibrated on all 10 tokens" in lines[1]


def test_without_observers_only_routed_tokens_are_computed(tiny_models):
    experts = _moe(tiny_models)
    calls = []
    experts[3].gate_proj.register_forward_pre_hook(lambda m, a: calls.append(a[0].shape[0]))  # a hook observes
    experts(torch.randn(4, 64), torch.tensor([[0, 1]] * 4), torch.full((4, 2), 0.5))
    assert calls == [4]
    calls.clear()
    experts.route_all_tokens = False
    experts(torch.randn(4, 64), torch.tensor([[0, 1]] * 4), torch.full((4, 2), 0.5))
    assert calls == []


def test_experts_of_one_layer_with_different_types_are_warned_about(tiny_models, caplog):
    from modelslim_core.protocol.qconfig import LinearQConfig
    from modelslim_core.quant.quantized_linear import LinearQuantizer

    experts = _moe(tiny_models)
    quantizer = LinearQuantizer(LinearQConfig.model_validate(
        {"weight": {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}}))
    experts[1].down_proj = quantizer.quantize("x", experts[1].down_proj)
    stats = routing_stats(experts, "model.layers.0.mlp.experts")[0]
    assert stats.expert_types["1.down_proj"] == "W8A16" and stats.expert_types["0.down_proj"] == "FLOAT"
    routing_report(stats)
    assert "its experts have different quantization types (FLOAT, W8A16" in caplog.text
