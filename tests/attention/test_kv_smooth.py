"""kv_smooth leaves the model's function unchanged (float, no quantization) and flattens the key channels."""

from __future__ import annotations

import pytest
import torch

from modelslim_core.attention.kv_smoothing import rope_paired
from modelslim_core.attention.sites import find_attention_sites
from modelslim_core.attention.stats import ChannelRange
from modelslim_core.attention.taps import add_tap, remove_tap
from modelslim_core.errors import QuantizationError
from modelslim_core.processors.kv_smooth import KVSmoothConfig, KVSmoothProcessor
from tests.attention._helpers import TOKENS, context_for, float_model, run_processor


def with_key_outliers(model: torch.nn.Module) -> torch.nn.Module:
    """Scale a few key channels (and the matching query channels down) so the keys have outlier channels."""
    with torch.no_grad():
        for site in find_attention_sites(model, ""):
            norm = site.child("k_norm")
            if norm is not None:
                norm.weight[[1, 5]] *= 30.0
                site.child("q_norm").weight[[1, 5]] /= 30.0
            else:
                site.child("k_proj").weight[[3, 21]] *= 30.0
    return model


def key_ranges(model: torch.nn.Module) -> list[ChannelRange]:
    sites = find_attention_sites(model, "")
    ranges = [ChannelRange() for _ in sites]
    for site, stat in zip(sites, ranges):
        add_tap(site.module, "keys", lambda q, k, v, stat=stat: (stat.update(k), (q, k, v))[1])
    with torch.no_grad():
        for row in TOKENS:
            model(input_ids=row[None])
    for site in sites:
        remove_tap(site.module, "keys")
    return ranges


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "llama"])
def test_kv_smooth_preserves_logits_and_flattens_keys(tiny_models, arch):
    path = tiny_models(arch, torch.float32)
    model = with_key_outliers(float_model(path))
    ids = torch.arange(3, 40)[None]
    with torch.no_grad():
        reference = model(input_ids=ids).logits
    before = [stat.abs_max().reshape(2, 16) for stat in key_ranges(model)]
    run_processor(KVSmoothProcessor(KVSmoothConfig(), context_for(path)), model)
    with torch.no_grad():
        smoothed = model(input_ids=ids).logits
    assert ((smoothed - reference).norm() / reference.norm()).item() < 1e-4
    for old, stat in zip(before, key_ranges(model)):
        new = rope_paired(stat.abs_max().reshape(2, 16))
        if arch == "qwen3":  # one factor per head_dim position shared by both KV heads: the larger head reaches 1
            assert torch.allclose(new.amax(dim=0), torch.ones(16), atol=1e-4)
        else:  # smooth_factor 1: every RoPE channel pair's max |K| becomes 1
            assert torch.allclose(new, torch.ones(2, 16), atol=1e-4)
        assert rope_paired(old).max() > 5  # there was something to flatten


def test_kv_smooth_factor_half_takes_the_square_root(tiny_models):
    path = tiny_models("llama", torch.float32)
    model = float_model(path)
    before = rope_paired(key_ranges(model)[0].abs_max().reshape(2, 16))
    run_processor(KVSmoothProcessor(KVSmoothConfig(smooth_factor=0.5), context_for(path)), model)
    after = rope_paired(key_ranges(model)[0].abs_max().reshape(2, 16))
    assert torch.allclose(after, before.sqrt(), rtol=1e-4)


def test_kv_smooth_after_quantization_is_refused(tiny_models):
    from modelslim_core.protocol.qconfig import LinearQConfig
    from modelslim_core.quant.quantized_linear import LinearQuantizer

    path = tiny_models("qwen2", torch.float32)
    model = float_model(path)
    attn = model.model.layers[0].self_attn
    qconfig = LinearQConfig.model_validate({"weight": {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}})
    attn.k_proj = LinearQuantizer(qconfig).quantize("k_proj", attn.k_proj)
    with pytest.raises(QuantizationError, match="put kv_smooth before the linear_quant"):
        run_processor(KVSmoothProcessor(KVSmoothConfig(), context_for(path)), model)
