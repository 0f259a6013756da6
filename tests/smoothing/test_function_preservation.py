"""Smoothing in float changes the weights but not the function: logits stay equal on every family."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from tests.smoothing._helpers import SMOOTHERS, context_for, logits, relative_error, run_processors


def _smoothed(tiny_models, small_calib, arch, dtype, smoother):
    path = tiny_models(arch, dtype)
    adapter = context_for(path, arch).adapter
    model = adapter.load_model(dtype)
    original = copy.deepcopy(model)
    run_processors(model, path, arch, [SMOOTHERS[smoother]], small_calib)
    return adapter, original, model


def _weights_changed(original, model) -> bool:
    before = dict(original.named_parameters())
    return any(not torch.equal(before[name], p) for name, p in model.named_parameters() if name in before)


@pytest.mark.parametrize("smoother", sorted(SMOOTHERS))
@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "llama"])
def test_float_smoothing_keeps_logits_fp32(tiny_models, small_calib, arch, smoother):
    adapter, original, model = _smoothed(tiny_models, small_calib, arch, torch.float32, smoother)
    assert _weights_changed(original, model)
    error = relative_error(logits(model, adapter), logits(original, adapter))
    assert error < 1e-4, f"{arch} {smoother}: relative logit change {error:.2e}"


@pytest.mark.parametrize("smoother", ["iter_smooth_asym", "flex_smooth_quant", "awq"])
@pytest.mark.parametrize("arch", ["qwen3_moe", "deepseek_v3"])
def test_float_smoothing_keeps_logits_of_moe_families(tiny_models, small_calib, arch, smoother):
    """Per-expert up→down pairs, shared experts and MLA norms (declared by the MoE adapters) keep the function;
    experts no calibration token reached are skipped."""
    adapter, original, model = _smoothed(tiny_models, small_calib, arch, torch.float32, smoother)
    assert _weights_changed(original, model)
    error = relative_error(logits(model, adapter), logits(original, adapter))
    assert error < 1e-4, f"{arch} {smoother}: relative logit change {error:.2e}"


@pytest.mark.parametrize("smoother", sorted(SMOOTHERS))
@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "llama"])
def test_float_smoothing_keeps_logits_bf16(tiny_models, small_calib, arch, smoother):
    """bf16 re-rounds every rescaled weight once; the change must stay within bf16's own noise, measured as
    the difference between the bf16 and the fp32 run of the same weights."""
    adapter, original, model = _smoothed(tiny_models, small_calib, arch, torch.bfloat16, smoother)
    reference = logits(original, adapter)
    bf16_noise = relative_error(reference, logits(copy.deepcopy(original).float(), adapter))
    error = relative_error(logits(model, adapter), reference)
    assert error < max(2 * bf16_noise, 1e-3), f"{arch} {smoother}: {error:.2e} vs bf16 noise {bf16_noise:.2e}"


def test_asymmetric_shift_adds_biases_that_centre_the_norm_output(tiny_models, small_calib):
    path = tiny_models("llama", torch.float32)
    adapter = context_for(path, "llama").adapter
    model = adapter.load_model(torch.float32)
    run_processors(model, path, "llama", [SMOOTHERS["iter_smooth_asym"]], small_calib)
    layer = model.model.layers[0]
    names = {n for n, _ in layer.named_parameters()}
    assert {"input_layernorm.bias", "post_attention_layernorm.bias", "self_attn.q_proj.bias",
            "mlp.gate_proj.bias"} <= names
    assert "self_attn.o_proj.bias" not in names and "mlp.up_proj.bias" in names  # ov / up-down never shift
    captured = []
    hook = layer.self_attn.q_proj.register_forward_pre_hook(lambda m, a: captured.append(a[0].reshape(-1, a[0].shape[-1])))
    texts = [json.loads(line)["inputs_pretokenized"] for line in small_calib.read_text().splitlines()]
    with torch.no_grad():
        for sample in adapter.tokenize(texts):
            model(**sample, use_cache=False)
    hook.remove()
    x = torch.cat(captured)
    centre = (x.amax(0) + x.amin(0)) / 2
    assert centre.abs().max() < 1e-4 * x.abs().max()  # on the calibration texts each range is now symmetric
