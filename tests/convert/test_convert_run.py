"""End to end: tiny FP8-block / INT4 checkpoints converted, the output reloaded and compared with the source.

The ascendv1 output is also put through vLLM-Ascend's own quantization loader (modelslim.engines), the same
check as `msmodelslim check`, when the engines dependency group is installed.
"""

from __future__ import annotations

import importlib.util
import json
import stat

import pytest
import torch

from modelslim_core.quant.mx import MXFP8, mx_quantize
from tests.cli._helpers import tree_digest
from tests.convert._run import convert, description, read_all, spec_yaml
from tests.convert.checkpoints import float_tensors, linear_shapes

HAS_VLLM_ASCEND = importlib.util.find_spec("vllm_ascend") is not None

MXFP8_MLP = """
linears:
  - {match: ['*.mlp.*'], target: W8A8_MXFP8, route: [FP8_BLOCK, FLOAT, W8A8_MXFP8]}
save: [{type: ascendv1, part_file_size: 0}]
"""


def assert_private_tree(root):
    for path in [root, *root.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o750 if path.is_dir() else 0o640), (path, oct(mode))


def test_fp8_block_to_w8a8_mxfp8_ascendv1(fp8_source, tmp_path):
    model, expected = fp8_source
    before = tree_digest(model)
    out = convert(model, tmp_path / "out", spec_yaml(MXFP8_MLP))
    assert tree_digest(model) == before, "model_path must never be modified"
    saved = read_all(out)
    tags = description(out)
    for name in linear_shapes():
        weight = expected[f"{name}.weight"].bfloat16()  # FP8 -> FLOAT (the model's bf16) -> target
        if ".mlp." in name:
            elements, exponents = mx_quantize(weight, MXFP8)
            assert torch.equal(saved[f"{name}.weight"].float(), elements) and saved[f"{name}.weight"].dtype == torch.float8_e4m3fn
            assert torch.equal(saved[f"{name}.weight_scale"], exponents)
            assert tags[f"{name}.weight"] == tags[f"{name}.weight_scale"] == "W8A8_MXFP8"
            restored = elements * torch.exp2(exponents.float() - 127).repeat_interleave(32, 1)
            assert (restored - weight.float()).abs().max() <= weight.float().abs().max() / 8  # 3 mantissa bits
        else:
            assert torch.equal(saved[f"{name}.weight"], weight)  # dequantized exactly, kept float
            assert tags[f"{name}.weight"] == "FLOAT"
        assert f"{name}.weight_scale_inv" not in saved
    for name, tensor in float_tensors().items():  # norms, embeddings, lm_head: copied unchanged
        assert torch.equal(saved[name], tensor) and tags[name] == "FLOAT"
    assert tags["model_quant_type"] == "W8A8_MXFP8" and tags["group_size"] == 32
    assert set(saved) == {k for k, v in tags.items() if isinstance(v, str) and "." in k}
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "qwen3"
    assert (out / "generation_config.json").is_file() and (out / "convert_best_practice.yaml").is_file()
    assert not list(out.glob(".*")), "no staging or partial file is left"
    assert_private_tree(out)


@pytest.mark.skipif(not HAS_VLLM_ASCEND, reason="the engines dependency group provides vllm-ascend")
@pytest.mark.parametrize("target", ["W8A8_MXFP8", "W4A8_MXFP", "W8A8_DYNAMIC", "FLOAT"])
def test_vllm_ascend_loads_the_converted_checkpoint(fp8_source, tmp_path, target):
    from modelslim.engines.conformance import check_saved

    out = convert(fp8_source[0], tmp_path / "out", spec_yaml(f"linears: [{{match: ['*_proj'], target: {target}}}]"))
    assert description(out)["model_quant_type"] == target
    assert [str(problem) for problem in check_saved(out, "vllm-ascend")] == []


def test_fp8_block_to_hugging_face_float_reloads_in_transformers(fp8_source, tmp_path):
    from transformers import AutoModelForCausalLM

    model, expected = fp8_source
    out = convert(model, tmp_path / "out", spec_yaml("save: [{type: huggingface, part_file_size: 0.0002}]"))
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()
    assert not (out / "quant_model_description.json").exists()
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16)
    state = loaded.state_dict()
    for name, weight in expected.items():
        assert torch.equal(state[name], weight.bfloat16()), name
    assert torch.equal(state["model.embed_tokens.weight"], float_tensors()["model.embed_tokens.weight"])
    assert_private_tree(out)


def test_int4_packed_to_float_without_model_type(int4_source, tmp_path):
    model, expected = int4_source
    out = convert(model, tmp_path / "out", spec_yaml("linears: [{match: ['*'], target: FLOAT}]\nsave: [{type: hf}]"))
    saved = read_all(out)
    for name, weight in expected.items():
        assert saved[name].dtype == torch.bfloat16
        assert torch.equal(saved[name], weight.bfloat16()), name
        assert f"{name.removesuffix('.weight')}.weight_packed" not in saved
    assert not [n for n in saved if n.endswith(("weight_shape", "weight_packed"))]


def test_int4_packed_requantized_to_mxfp8(int4_source, tmp_path):
    model, expected = int4_source
    out = convert(model, tmp_path / "out", spec_yaml("linears: [{match: ['*.mlp.*'], target: W8A8_MXFP8}]"))
    saved = read_all(out)
    name = "model.layers.1.mlp.up_proj.weight"
    elements, exponents = mx_quantize(expected[name].bfloat16(), MXFP8)
    assert torch.equal(saved[name].float(), elements) and torch.equal(saved[name.replace("weight", "weight_scale")], exponents)


def test_rerun_replaces_earlier_output(fp8_source, tmp_path):
    out = tmp_path / "out"
    convert(fp8_source[0], out, spec_yaml("save: [{type: ascendv1, part_file_size: 0.0002}]"))
    sharded = sorted(p.name for p in out.glob("quant_model_weights-*"))
    assert len(sharded) > 1
    convert(fp8_source[0], out, spec_yaml(MXFP8_MLP))
    assert not list(out.glob("quant_model_weights-*")), "stale shards of the first run are gone"
    assert (out / "quant_model_weights.safetensors").is_file()
    assert description(out)["model_quant_type"] == "W8A8_MXFP8"


@pytest.mark.skipif(not HAS_VLLM_ASCEND, reason="the engines dependency group provides vllm-ascend")
def test_deepseek_v3_fp8_release_experts_to_mxfp8_load_in_vllm_ascend(tmp_path):
    """MLA attention, a dense first layer, routed and shared experts: the DeepSeek-V3 layout, FP8 as released."""
    from transformers import DeepseekV3Config

    from modelslim.engines.conformance import check_saved
    from tests.convert.checkpoints import release_fp8_checkpoint

    config = DeepseekV3Config(
        vocab_size=512, hidden_size=256, intermediate_size=384, moe_intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, n_shared_experts=1, n_routed_experts=4, num_experts_per_tok=2,
        n_group=1, topk_group=1, first_k_dense_replace=1, q_lora_rank=128, kv_lora_rank=64, qk_rope_head_dim=32,
        qk_nope_head_dim=32, v_head_dim=32, max_position_embeddings=256, tie_word_embeddings=False)
    model = release_fp8_checkpoint(tmp_path / "src", config, "DeepSeek-V3")
    experts = convert(model, tmp_path / "experts", spec_yaml("linears: [{match: ['*.mlp.experts.*'], target: W8A8_MXFP8}]"))
    tags = description(experts)
    assert tags["model.layers.1.mlp.experts.3.down_proj.weight"] == "W8A8_MXFP8"
    assert tags["model.layers.1.mlp.shared_experts.up_proj.weight"] == "FLOAT"
    assert tags["model.layers.1.self_attn.kv_b_proj.weight"] == "FLOAT"
    assert not [name for name in read_all(experts) if name.endswith("weight_scale_inv")]
    assert [str(problem) for problem in check_saved(experts, "vllm-ascend")] == []
    # `*` takes every linear, but never the router: vLLM-Ascend builds it float (with its e_score_correction_bias).
    everything = convert(model, tmp_path / "all", spec_yaml("linears: [{match: ['*'], target: W8A8_MXFP8}]"))
    tags = description(everything)
    assert tags["model.layers.1.mlp.gate.weight"] == "FLOAT" and tags["lm_head.weight"] == "W8A8_MXFP8"
    assert [str(problem) for problem in check_saved(everything, "vllm-ascend")] == []
