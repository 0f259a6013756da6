"""QuaRot applied in float leaves the model's function unchanged (it is an exact change of basis)."""

from __future__ import annotations

import pytest
import torch

from modelslim_core.rotation.quarot_transform import QuarotSettings
from tests.rotation._helpers import apply_quarot, context_for, load, logits, relative_error
from tests.tiny_models import make_tiny_model


@pytest.fixture(scope="module")
def fp32_models(tmp_path_factory):
    cache = {}

    def get(arch: str, **overrides):
        key = (arch, tuple(sorted(overrides.items())))
        if key not in cache:
            cache[key] = make_tiny_model(tmp_path_factory.mktemp(arch), arch, torch.float32, **overrides)
        return cache[key]

    return get


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "llama"])
@pytest.mark.parametrize("settings", [QuarotSettings(), QuarotSettings(block_size=16),
                                      QuarotSettings(online=True, down_proj_online_layers=(0, 1), max_tp_size=2)],
                         ids=["full", "block16", "online"])
def test_quarot_keeps_logits_fp32(fp32_models, arch, settings):
    path = fp32_models(arch)
    model = load(path)
    expected = logits(model)
    apply_quarot(model, context_for(path), settings)
    assert relative_error(logits(model), expected) < 1e-4
    # the transform really changed the weights: norms are unit, the stream is rotated
    assert torch.allclose(model.model.layers[0].input_layernorm.weight, torch.ones(64))
    assert not torch.allclose(model.model.embed_tokens.weight, load(path).model.embed_tokens.weight)


def test_tied_embeddings_are_untied(fp32_models):
    path = fp32_models("qwen2", tie_word_embeddings=True)
    model = load(path)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    expected = logits(model)
    context = context_for(path)
    apply_quarot(model, context)
    assert model.lm_head.weight is not model.model.embed_tokens.weight
    assert model.config.tie_word_embeddings is False
    assert context.state["rotation.export"]["untied"] is True
    assert relative_error(logits(model), expected) < 1e-4


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "llama"])
def test_quarot_bf16_within_one_bf16_rounding(fp32_models, arch):
    """bf16 storage: rotating then rounding the weights to bf16 once may cost about what rounding the original
    weights to bf16 costs (one relative rounding of ~2^-9 per weight), not more."""
    path = fp32_models(arch)
    float_model = load(path)
    expected = logits(float_model)
    round_trip = load(path).to(torch.bfloat16).float()
    rounding_error = relative_error(logits(round_trip), expected)
    rotated = load(path)
    apply_quarot(rotated, context_for(path))
    rotated = rotated.to(torch.bfloat16).float()
    error = relative_error(logits(rotated), expected)
    assert error < 2 * rounding_error, (error, rounding_error)
    # and a model computing in bf16 end to end (weights rotated in float64, cast once)
    in_bf16 = load(path, torch.bfloat16)
    bf16_expected = logits(in_bf16)
    apply_quarot(in_bf16, context_for(path))
    assert relative_error(logits(in_bf16), bf16_expected) < 4 * max(rounding_error, relative_error(bf16_expected, expected))
