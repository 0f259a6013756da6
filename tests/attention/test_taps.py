"""Attention taps see post-RoPE Q and K/V before the GQA repeat, change what the kernel gets, and leave no trace."""

from __future__ import annotations

import pytest
import torch

from modelslim_core.attention.sites import find_attention_sites
from modelslim_core.attention.taps import add_tap, remove_tap
from tests.attention._helpers import float_model


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "llama"])
def test_taps_observe_states_and_restore_the_kernel(tiny_models, arch, attn):
    model = float_model(tiny_models(arch, torch.float32), attn)
    ids = torch.arange(3, 20)[None]
    reference = model(input_ids=ids).logits
    sites = find_attention_sites(model, "")
    assert [s.name for s in sites] == ["model.layers.0.self_attn", "model.layers.1.self_attn"]
    assert (sites[0].num_heads, sites[0].num_kv_heads, sites[0].head_dim) == (4, 2, 16)
    seen = []
    add_tap(sites[0].module, "spy", lambda q, k, v: (seen.append((q.shape, k.shape, v.shape)), (q, k, v))[1])
    add_tap(sites[1].module, "zero_v", lambda q, k, v: (q, k, torch.zeros_like(v)))
    assert model.config._attn_implementation == f"modelslim_tap:{attn}"
    tapped = model(input_ids=ids).logits
    assert seen == [((1, 4, 17, 16), (1, 2, 17, 16), (1, 2, 17, 16))]
    assert not torch.allclose(tapped, reference)  # the second layer's attention got zero values
    remove_tap(sites[0].module, "spy")
    assert model.config._attn_implementation == f"modelslim_tap:{attn}"  # layer 1 still tapped
    remove_tap(sites[1].module, "zero_v")
    assert model.config._attn_implementation == attn
    assert torch.equal(model(input_ids=ids).logits, reference)


def test_identity_tap_changes_nothing(tiny_models):
    model = float_model(tiny_models("qwen2", torch.float32))
    ids = torch.arange(3, 20)[None]
    reference = model(input_ids=ids).logits
    for site in find_attention_sites(model, ""):
        add_tap(site.module, "identity", lambda q, k, v: (q, k, v))
    assert torch.equal(model(input_ids=ids).logits, reference)
