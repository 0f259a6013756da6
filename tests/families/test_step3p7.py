"""Step-3.7-Flash (`step3p7`): the language model quantized W8A8 (routed experts, router and per-head output gate
float), the vision tower and projector written back float in the release's layout (fused `attn.in_proj_*` with
the rotary rows interleaved again, stacked `moe.*_proj` experts, `vit_large_projector`), the MTP layer carried
over; reload within the usual error, vLLM-Ascend's loader accepts it, and a config quantizing the experts is
refused at load because vLLM-Ascend 0.23 has no expert layout for `step3p7`."""

from __future__ import annotations

import json

import pytest
import torch

from modelslim.engines.conformance import check_saved
from modelslim_core.errors import ConfigError
from modelslim_vlm.models.step3p7 import Step3p7Adapter
from tests.families._tiny_vlm import make_step3p7
from tests.families._vlm_runs import logits_error, quantize_and_read, quantize_vlm

PRACTICE = "step3p7/step3p7-w8a8.yaml"
#: Practices these tests put through vLLM-Ascend's loader.
ENGINE_CHECKED = (PRACTICE,)


@pytest.fixture(scope="module")
def step(tmp_path_factory):
    return make_step3p7(tmp_path_factory.mktemp("step3p7") / "model")


def test_w8a8_keeps_the_release_layout_reloads_and_loads_in_vllm_ascend(step, media_index, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out, source, saved = quantize_and_read(step, tmp_path / "out", "Step-3.7-Flash", PRACTICE, media_index)
    float_release = [name for name in source if name.startswith(("vision_model.", "vit_large_projector."))
                     or ".moe." in name or name.startswith("model.layers.3.")]
    assert any(name.endswith(".attn.in_proj_weight") for name in float_release)
    assert "model.layers.1.moe.gate_proj.weight" in float_release
    for name in float_release:  # tower, projector, stacked experts, router, MTP: release names, unchanged
        assert torch.equal(saved[name], source[name]), name
    assert not [name for name in saved if name.startswith(("model.language_model.", "model.vision_model."))
                or ".experts." in name or "self_attn.q_proj" in name and name.startswith("vision_model.")]
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["model.layers.1.self_attn.q_proj.weight"] == "W8A8"
    assert description["model.layers.0.mlp.gate_proj.weight"] == "W8A8_DYNAMIC"
    assert description["model.layers.2.share_expert.down_proj.weight"] == "W8A8_DYNAMIC"
    for name in ("model.layers.1.self_attn.g_proj.weight", "model.layers.1.moe.gate.weight",
                 "model.layers.2.moe.down_proj.weight", "vit_large_projector.weight"):
        assert description[name] == "FLOAT", name
    error = logits_error("Step-3.7-Flash", step, out, media_index)
    print(f"step3p7-w8a8: relative multimodal logits error {error:.4f}")
    assert error < 0.05
    assert [str(problem) for problem in check_saved(out, "vllm-ascend")] == []


def test_quantized_experts_are_refused_at_load_for_vllm_ascend(step, media_index, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def quantize_experts(config: dict) -> None:
        config["spec"]["process"][0]["configs"][1]["include"].append("model.language_model.layers.*.mlp.experts.*")

    with pytest.raises(ConfigError, match="step3p7"):
        quantize_vlm(step, tmp_path / "refused", "Step-3.7-Flash", PRACTICE, media_index, quantize_experts)
    assert not (tmp_path / "refused" / "quant_model_description.json").exists()


def test_quantized_experts_are_refused_at_load_for_any_engine(step, media_index, tmp_path, monkeypatch):
    """The release stacks the routed experts into one tensor per projection, which holds float weights only: with
    MindIE named (no vLLM-Ascend check) the item is still refused before the model is loaded, not in the saver."""
    import modelslim_vlm.models.step3p7 as step3p7

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(step3p7.Step3p7Adapter, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr(step3p7.Step3p7Adapter, "build_skeleton", lambda *a, **k: pytest.fail("model loaded"))

    def quantize_experts(config: dict) -> None:
        config["spec"]["process"][0]["configs"][1]["include"].append("model.language_model.layers.*.mlp.experts.*")

    with pytest.raises(ConfigError, match="model.language_model.layers.1.mlp.experts.0.gate_proj.*stores that linear "
                                          "fused") as refused:
        quantize_vlm(step, tmp_path / "refused", "Step-3.7-Flash", PRACTICE, media_index, quantize_experts,
                     tags=["MindIE"])
    assert "'*mlp.experts.*'" in refused.value.hint
    assert not (tmp_path / "refused").exists()


def test_release_fused_linears_are_the_moe_layers_experts(step):
    adapter = Step3p7Adapter.__new__(Step3p7Adapter)
    adapter.config_json = json.loads((step / "config.json").read_text())
    assert adapter.release_fused_linears() == [f"model.language_model.layers.{layer}.mlp.experts.0.{projection}"
                                               for layer in (1, 2) for projection in ("gate_proj", "up_proj",
                                                                                      "down_proj")]


def test_rotation_is_refused_with_the_reason(step, media_index, tmp_path, monkeypatch):
    """Step-3.7's norms scale by 1 + gamma, which a rotation of the residual stream cannot pass through."""
    from modelslim_core.errors import ModelError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="1 \\+ γ"):  # MindIE: past vLLM-Ascend's refusal of rotated experts
        quantize_vlm(step, tmp_path / "rotated", "Step-3.7-Flash", PRACTICE, media_index,
                     lambda config: config["spec"]["process"].insert(0, {"type": "quarot"}), tags=["MindIE"])
    assert not (tmp_path / "rotated" / "quant_model_description.json").exists()


@pytest.mark.parametrize("module, release", [
    ("model.language_model.layers.3.self_attn.g_proj.weight", "model.layers.3.self_attn.g_proj.weight"),
    ("model.language_model.layers.1.mlp.gate.weight", "model.layers.1.moe.gate.weight"),
    ("model.language_model.layers.1.mlp.gate.e_score_correction_bias", "model.layers.1.moe.router_bias"),
    ("model.language_model.layers.1.mlp.shared_experts.up_proj.weight", "model.layers.1.share_expert.up_proj.weight"),
    ("model.language_model.embed_tokens.weight", "model.embed_tokens.weight"),
    ("lm_head.weight", "lm_head.weight"),
    ("model.multi_modal_projector.weight", "vit_large_projector.weight"),
    ("model.vision_model.embeddings.patch_embedding.weight", "vision_model.conv1.weight"),
    ("model.vision_model.embeddings.position_embedding.weight", "vision_model.positional_embedding"),
    ("model.vision_model.pre_layernorm.bias", "vision_model.ln_pre.bias"),
    ("model.vision_model.layers.4.layernorm_after.weight", "vision_model.transformer.resblocks.4.ln_2.weight"),
    ("model.vision_model.layers.0.self_attn.out_proj.bias", "vision_model.transformer.resblocks.0.attn.out_proj.bias"),
    ("model.vision_model.layers.1.mlp.fc1.weight", "vision_model.transformer.resblocks.1.mlp.c_fc.weight"),
    ("model.vision_model.layers.1.lambda_2", "vision_model.transformer.resblocks.1.ls_2.gamma"),
    ("model.vision_model.downsampler2.weight", "vision_model.vit_downsampler2.weight"),
])
def test_release_names(module, release):
    adapter = Step3p7Adapter.__new__(Step3p7Adapter)
    adapter.config_json = {"model_type": "step3p7", "architectures": ["Step3p7ForConditionalGeneration"]}
    assert adapter.saved_tensor_name(module) == release


def test_fused_parts_stack_experts_and_fuse_the_tower_qkv():
    adapter = Step3p7Adapter.__new__(Step3p7Adapter)
    adapter.config_json = {"text_config": {"num_local_experts": 3}, "vision_config": {"num_attention_heads": 1}}
    part = adapter.fused_checkpoint_part("model.language_model.layers.2.mlp.experts.1.down_proj.weight")
    assert (part.target, part.slot, part.parts) == ("model.layers.2.moe.down_proj.weight", 1, 3)
    assert part.fuse([torch.full((2, 5), float(e)) for e in range(3)])[:, 0, 0].tolist() == [0.0, 1.0, 2.0]
    qkv = adapter.fused_checkpoint_part("model.vision_model.layers.0.self_attn.k_proj.bias")
    assert (qkv.target, qkv.slot, qkv.parts) == ("vision_model.transformer.resblocks.0.attn.in_proj_bias", 1, 3)
    split = torch.tensor([0.0, 2.0, 1.0, 3.0])  # one head: split-halves rotary order back to interleaved pairs
    assert qkv.fuse([split, split, split]).tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 2, 1, 3]
    assert adapter.fused_checkpoint_part("model.language_model.layers.2.mlp.shared_experts.up_proj.weight") is None
