"""QuaRot on mixture-of-experts families: the router and every expert read the rotated stream, the experts'
down projections write it, MLA attention (DeepSeek) is rotated without a head_dim rotation, and the
function stays the same; end to end, a rotated and quantized MoE checkpoint reloads close to the float model."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from modelslim_core.errors import ModelError
from modelslim_core.models.resolve import create_adapter
from modelslim_core.rotation.quarot_transform import QuarotSettings
from modelslim_core.runtime.context import DeviceSpec, RunContext
from tests.moe._helpers import MODEL_TYPES, quantize, relative_logit_error
from tests.quant_runs import DYNAMIC_ACT, ONLINE_ROTATIONS_TARGET, WEIGHT_SYM
from tests.rotation._helpers import TOKENS, apply_quarot, logits, relative_error
from tests.runners.test_data_parallel import write_config
from tests.tiny_models import make_tiny_model

ARCHS = ["qwen3_moe", "deepseek_v3", "deepseek_v32"]


@pytest.fixture(scope="module")
def moe_models(tmp_path_factory):
    cache = {}

    def get(arch: str):
        if arch not in cache:
            cache[arch] = make_tiny_model(tmp_path_factory.mktemp(arch), arch, torch.float32)
        return cache[arch]

    return get


def loaded(path, arch):
    adapter = create_adapter(MODEL_TYPES[arch], path, trust_remote_code=False)
    context = RunContext(adapter=adapter, model_path=path, save_path=path / "unused", device=DeviceSpec("cpu"),
                         compute_dtype=torch.float32)
    return adapter.load_model(torch.float32).eval(), context


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("settings", [QuarotSettings(), QuarotSettings(online=True, max_tp_size=2)], ids=["full", "online"])
def test_quarot_keeps_moe_logits_fp32(moe_models, arch, settings):
    model, context = loaded(moe_models(arch), arch)
    expected = logits(model)
    router_before = model.model.layers[-1].mlp.gate.weight.clone()
    apply_quarot(model, context, settings)
    assert relative_error(logits(model), expected) < 1e-4
    layer = model.model.layers[-1]
    assert torch.allclose(layer.post_attention_layernorm.weight, torch.ones_like(layer.post_attention_layernorm.weight))
    assert not torch.allclose(layer.mlp.gate.weight, router_before)  # the router reads the rotated stream


def test_online_down_proj_rotation_is_for_dense_layers_only(moe_models):
    model, context = loaded(moe_models("deepseek_v3"), "deepseek_v3")
    expected = logits(model)
    apply_quarot(model, context, QuarotSettings(online=True, down_proj_online_layers=(0,), max_tp_size=2))
    assert relative_error(logits(model), expected) < 1e-4  # layer 0 of this DeepSeek is dense
    model, context = loaded(moe_models("qwen3_moe"), "qwen3_moe")
    with pytest.raises(ModelError, match="layer 0, but model.layers.0 is a mixture-of-experts layer"):
        apply_quarot(model, context, QuarotSettings(online=True, down_proj_online_layers=(0,), max_tp_size=2))


@pytest.mark.parametrize("arch", ["qwen3_moe", "deepseek_v3"])
def test_rotated_w8a8_moe_checkpoint_reloads_close_to_float(moe_models, arch, small_calib, tmp_path, cli_env):
    process = (
        "    - {type: quarot, online: true, max_tp_size: 2}\n"
        f"    - {{type: linear_quant, qconfig: {{act: {DYNAMIC_ACT}, weight: {WEIGHT_SYM}}}, include: "
        "['*experts*', '*o_proj', '*q_a_proj', '*kv_a_proj_with_mqa', '*self_attn.?_proj']}\n"
    )
    config = write_config(tmp_path, "rotate", process, small_calib, runner="layer_wise")
    model = moe_models(arch)
    out = quantize(model, tmp_path / "out", MODEL_TYPES[arch], config, tags=ONLINE_ROTATIONS_TARGET)
    error = relative_logit_error(model, out, TOKENS)
    print(f"{arch}: rotated W8A8 logit error {error:.4f}")
    assert 0 < error < 0.05, error
    description = json.loads((out / "quant_model_description.json").read_text())
    assert "model.layers.1.self_attn.o_proj" in description["metadata"]["quarot"]["heads_rotation"]["layers"]
    router = "model.layers.1.mlp.gate.weight"
    assert description[router] == "FLOAT"
    saved = load_file(out / "quant_model_weights.safetensors")[router]
    original = load_file(model / "model.safetensors")[router]
    assert saved.shape == original.shape and not torch.allclose(saved, original)  # saved as rotated


def test_norms_a_rotation_cannot_pass_are_refused(moe_models):
    """A LayerNorm subtracts the mean and a (1 + γ) norm (Gemma) does not scale by γ: both would make the
    rotated model compute something else, so the transform refuses them by name."""
    from torch import nn

    from modelslim_core.rotation.fusing import computes_rms_norm

    model, context = loaded(moe_models("qwen3_moe"), "qwen3_moe")
    assert computes_rms_norm(model.model.layers[0].input_layernorm)
    layer_norm = nn.LayerNorm(64)
    with torch.no_grad():
        layer_norm.weight.uniform_(0.5, 1.5)
    assert not computes_rms_norm(layer_norm)

    class OnePlusGamma(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.full((64,), 0.1))

        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (1 + self.weight)

    assert not computes_rms_norm(OnePlusGamma())
    model.model.layers[0].input_layernorm = layer_norm
    with pytest.raises(ModelError, match=r"model.layers.0.input_layernorm \(LayerNorm\) is not an RMSNorm"):
        apply_quarot(model, context)
