"""compressed_tensors_saver: transformers (with the compressed-tensors package) loads the export, decompressed on
CPU, and computes the logits our reference runtime computes from the ascendv1 export of the same run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.errors import ConfigError
from modelslim_core.reference_runtime import load_quantized_model
from modelslim_save_ascend.ascendv1 import AscendV1Saver
from modelslim_save_ascend.compressed_tensors_saver import CompressedTensorsSaver
from modelslim_save_ascend.ct_layout import pack_int_codes
from tests.quant_runs import DYNAMIC_ACT, STATIC_ACT, WEIGHT_ASYM, WEIGHT_SYM, quantize_capturing

pytest.importorskip("compressed_tensors")
from transformers import AutoModelForCausalLM  # noqa: E402

INT4_SYM = "{scope: per_channel, dtype: int4, symmetric: true, method: minmax}"
INT8_GROUP_ASYM = "{scope: per_group, dtype: int8, symmetric: false, method: minmax, ext: {group_size: 16}}"
INT4_GROUP_GPTQ = "{scope: per_group, dtype: int4, symmetric: true, method: gptq, ext: {group_size: 16}}"
INT4_CHANNEL_SYM = "{scope: per_channel, dtype: int4, symmetric: true, method: minmax}"
INT4_GROUP_ASYM = "{scope: per_group, dtype: int4, symmetric: false, method: minmax, ext: {group_size: 32}}"
INT4_GROUP_SYM = "{scope: per_group, dtype: int4, symmetric: true, method: minmax, ext: {group_size: 32}}"
FP8_ACT = "{scope: per_token, dtype: fp8_e4m3, symmetric: true, method: minmax}"
FP8_WEIGHT = "{scope: per_channel, dtype: fp8_e4m3, symmetric: true, method: minmax}"

#: name -> (rules, how close transformers' logits must be to ours, relative to the quantization effect).
#: transformers simulates activation quantization with compressed-tensors' own arithmetic: static activations
#: and weights use the saved parameters exactly, so only rounding ties flipped by float summation order differ
#: (amplified layer by layer); dynamic int8 per-token uses max|x|/127.5 where the deployed kernels (ours,
#: vLLM's) use max|x|/127, so those logits differ by about as much as quantization itself changes them.
SCHEMES = {
    "w8a8_static": ([(STATIC_ACT, WEIGHT_SYM, "*")], 0.25),
    "int8_mixed": ([(STATIC_ACT, WEIGHT_SYM, "*self_attn*"), (DYNAMIC_ACT, WEIGHT_SYM, "*mlp.gate_proj"),
                    (DYNAMIC_ACT, WEIGHT_SYM, "*mlp.up_proj"), (None, WEIGHT_ASYM, "*down_proj")], 0.5),
    "w8a8_dynamic": ([(DYNAMIC_ACT, WEIGHT_SYM, "*")], 1.0),
    "w8a16_group_asym": ([(None, INT8_GROUP_ASYM, "*")], 1e-4),
    "w4a8_dynamic": ([(DYNAMIC_ACT, INT4_SYM, "*")], 0.1),
    "fp8_dynamic": ([(FP8_ACT, FP8_WEIGHT, "*")], 1e-4),
}


def config_text(rules, saver: str, dataset: Path) -> str:
    lines = []
    for act, weight, include in rules:
        qconfig = f"{{act: {act}, weight: {weight}}}" if act else f"{{weight: {weight}}}"
        lines.append(f"        - {{type: linear_quant, qconfig: {qconfig}, include: [\"{include}\"]}}")
    return ("apiversion: modelslim_v1\nspec:\n  runner: layer_wise\n  process:\n    - type: group\n      configs:\n"
            + "\n".join(lines) + f"\n  save: [{{type: {saver}, part_file_size: 0}}]\n  dataset: {dataset}\n")


def quantize(model: Path, tmp_path: Path, name: str, text: str) -> Path:
    config, out = tmp_path / f"{name}.yaml", tmp_path / name
    config.write_text(text)
    run_quant(QuantArgs(str(model), str(out), "Qwen2-demo", config_path=str(config), device="cpu"))
    return out


def capturing(model: Path, tmp_path: Path, name: str, rules, dataset: Path, saver: type) -> tuple[Path, dict]:
    """Quantize with `rules` and `saver`; the output directory and the saved QuantizedLinears by name."""
    config, out = tmp_path / f"{name}.yaml", tmp_path / name
    config.write_text(config_text(rules, saver.config_class.model_fields["type"].default, dataset))
    return out, quantize_capturing(model, config, out, saver=saver)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_transformers_loads_the_export_and_matches_the_reference_runtime(scheme, tiny_models, small_calib, tmp_path, cli_env):
    rules, tolerance = SCHEMES[scheme]
    model = tiny_models("qwen2")
    ascend, quantized = capturing(model, tmp_path, "ascend", rules, small_calib, AscendV1Saver)
    ct = quantize(model, tmp_path, "ct", config_text(rules, "compressed_tensors_saver", small_calib))

    quantization = json.loads((ct / "config.json").read_text())["quantization_config"]
    assert quantization["quant_method"] == "compressed-tensors"
    assert quantization["ignore"] == ["lm_head"]
    assert not (ct / "quant_model_description.json").exists() and (ct / "model.safetensors").is_file()

    assert_transformers_matches(scheme, model, ct, load_quantized_model(model, ascend).eval(), quantized, tolerance)


def assert_transformers_matches(scheme: str, model: Path, ct: Path, ours_model: torch.nn.Module, quantized: dict,
                                tolerance: float) -> None:
    """transformers' decompressed weights are exactly ours, and its logits are within `tolerance` × the
    quantization effect of `ours_model`'s."""
    torch.manual_seed(0)
    input_ids = torch.randint(0, 200, (2, 12))
    loaded = AutoModelForCausalLM.from_pretrained(ct, dtype=torch.float32).eval()
    float_model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    with torch.no_grad():
        ours = ours_model(input_ids=input_ids).logits
        theirs = loaded(input_ids=input_ids).logits  # the first forward decompresses every layer
        plain = float_model(input_ids=input_ids).logits
    for name, layer in quantized.items():
        assert torch.allclose(loaded.get_submodule(name).weight, layer.qweight.dequantize(), rtol=1e-6, atol=1e-8), name
    gap = ((theirs - ours).norm() / ours.norm()).item()
    quant_effect = ((plain - ours).norm() / ours.norm()).item()
    print(f"{scheme}: |transformers - ours| / |ours| = {gap:.2e}; quantization effect {quant_effect:.2e}")
    assert quant_effect > 1e-3 and gap <= tolerance * quant_effect, (gap, quant_effect)


#: Schemes only compressed-tensors writes (no ascendv1 layout): name -> (rules, tolerance as above).
CT_ONLY_SCHEMES = {
    "w4a16_group_gptq": ([(None, INT4_GROUP_GPTQ, "*")], 1e-4),
    "w4a16_channel": ([(None, INT4_CHANNEL_SYM, "*")], 1e-4),
    "w4a8_dynamic_per_group": ([(DYNAMIC_ACT, INT4_GROUP_SYM, "*")], 1.0),
}


def simulated(model: Path, layers: dict) -> torch.nn.Module:
    """The float model with every quantized linear swapped for the quantizer's own layer: what our reference
    arithmetic computes for a checkpoint no Ascend format can hold."""
    result = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    for name, layer in layers.items():
        result.set_submodule(name, layer.float())
    return result


@pytest.mark.parametrize("scheme", list(CT_ONLY_SCHEMES))
def test_ct_only_schemes_load_in_transformers_and_match_our_arithmetic(scheme, tiny_models, small_calib, tmp_path, cli_env):
    rules, tolerance = CT_ONLY_SCHEMES[scheme]
    model = tiny_models("qwen2")
    ct, quantized = capturing(model, tmp_path, "ct", rules, small_calib, CompressedTensorsSaver)
    assert quantized and all(layer.qweight.bits == 4 for layer in quantized.values())

    groups = json.loads((ct / "config.json").read_text())["quantization_config"]["config_groups"]
    (group,) = groups.values()
    assert group["format"] == "pack-quantized" and group["weights"]["num_bits"] == 4
    assert (group["input_activations"] is None) == scheme.startswith("w4a16")
    assert_transformers_matches(scheme, model, ct, simulated(model, quantized), quantized, tolerance)

def test_asymmetric_int4_zero_points_decode_with_the_compressed_tensors_compressor(tiny_models, small_calib, tmp_path, cli_env):
    """transformers cannot load asymmetric pack-quantized checkpoints yet (its meta-device pass expects an
    unpacked zero point: llm-compressor#1618), so the proof here is compressed-tensors' own decompressor."""
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationScheme

    ct, quantized = capturing(tiny_models("qwen2"), tmp_path, "ct", [(None, INT4_GROUP_ASYM, "*")], small_calib,
                              CompressedTensorsSaver)
    (group,) = json.loads((ct / "config.json").read_text())["quantization_config"]["config_groups"].values()
    scheme = QuantizationScheme(targets=["Linear"], weights=group["weights"])
    tensors = load_file(ct / "model.safetensors")
    for name, layer in quantized.items():
        state = {suffix: tensors[f"{name}.{suffix}"] for suffix in ("weight_packed", "weight_scale", "weight_shape", "weight_zero_point")}
        assert state["weight_zero_point"].shape == (layer.out_features // 8, layer.in_features // 32)
        weight = PackedQuantizationCompressor.decompress(state, scheme)["weight"]
        assert torch.allclose(weight.float(), layer.qweight.dequantize(), rtol=1e-6, atol=1e-8), name


@pytest.mark.parametrize("weight", [INT4_CHANNEL_SYM, INT4_GROUP_SYM])
def test_ascendv1_refuses_int4_schemes_vllm_ascend_cannot_load(weight, tiny_models, small_calib, tmp_path, cli_env):
    act = None if weight == INT4_CHANNEL_SYM else DYNAMIC_ACT
    text = config_text([(act, weight, "*")], "ascendv1_saver", small_calib)
    with pytest.raises(ConfigError) as error:
        quantize(tiny_models("qwen2"), tmp_path, "ascend", text)
    message = f"{error.value.message} {error.value.hint}"
    assert "ascendv1_saver cannot write W4A" in message and "compressed_tensors_saver" in message
    assert not (tmp_path / "ascend").exists()


def test_int_quantized_and_pack_quantized_tensors(tiny_models, small_calib, tmp_path, cli_env):
    rules = [(STATIC_ACT, WEIGHT_SYM, "*self_attn*"), (DYNAMIC_ACT, INT4_SYM, "*mlp*")]
    out = quantize(tiny_models("qwen2"), tmp_path, "ct", config_text(rules, "compressed_tensors_saver", small_calib))
    tensors = load_file(out / "model.safetensors")
    q = "model.layers.0.self_attn.q_proj."
    assert tensors[q + "weight"].dtype == torch.int8 and tensors[q + "weight_scale"].shape == (64, 1)
    assert tensors[q + "input_scale"].shape == (1,) and tensors[q + "input_zero_point"].dtype == torch.int8
    down = "model.layers.0.mlp.down_proj."
    assert tensors[down + "weight_packed"].dtype == torch.int32
    assert tensors[down + "weight_shape"].tolist() == [64, 128]
    assert tensors[down + "weight_packed"].shape == (64, 128 * 4 // 32)
    quantization = json.loads((out / "config.json").read_text())["quantization_config"]
    assert quantization["format"] == "mixed-precision"
    formats = {g["format"] for g in quantization["config_groups"].values()}
    assert formats == {"int-quantized", "pack-quantized"}


def test_packing_matches_the_format_definition():
    codes = torch.tensor([[-8, -1, 0, 1, 2, 3, 4, 7]], dtype=torch.int8)
    # code + 8 in nibble k of the word: 0, 7, 8, 9, 10, 11, 12, 15 from the lowest nibble up
    expected = sum(v << (4 * k) for k, v in enumerate([0, 7, 8, 9, 10, 11, 12, 15]))
    assert pack_int_codes(codes, 4).tolist() == [[expected - 2**32]]
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    sample = torch.randint(-8, 8, (5, 24), dtype=torch.int8)
    assert torch.equal(pack_int_codes(sample, 4), pack_to_int32(sample, 4))
    assert torch.equal(pack_int_codes(sample, 4, dim=0), pack_to_int32(sample, 4, packed_dim=0))


def test_unsupported_scheme_is_refused_at_config_load(tiny_models, small_calib, tmp_path, cli_env):
    mix = "{scope: pd_mix, dtype: int8, symmetric: false, method: minmax}"
    text = config_text([(mix, WEIGHT_SYM, "*")], "compressed_tensors_saver", small_calib)
    with pytest.raises(ConfigError, match="compressed_tensors_saver cannot write W8A8_MIX"):
        quantize(tiny_models("qwen2"), tmp_path, "ct", text)
    assert not (tmp_path / "ct").exists()


def test_sharded_export_loads_through_its_index(tiny_models, small_calib, tmp_path, cli_env):
    text = config_text(SCHEMES["w8a16_group_asym"][0], "compressed_tensors_saver", small_calib)
    text = text.replace("part_file_size: 0}", "part_file_size: 0.0003}")  # ~315 KiB shards
    model = tiny_models("qwen2")
    out = quantize(model, tmp_path, "ct", text)
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) >= 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert (out / "model.safetensors.index.json").is_file() and not (out / "model.safetensors").exists()
    single = quantize(model, tmp_path, "single", config_text(SCHEMES["w8a16_group_asym"][0], "compressed_tensors_saver",
                                                              small_calib))
    input_ids = torch.randint(0, 200, (1, 8))
    with torch.no_grad():
        sharded_logits = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(input_ids=input_ids).logits
        single_logits = AutoModelForCausalLM.from_pretrained(single, dtype=torch.float32)(input_ids=input_ids).logits
    assert torch.equal(sharded_logits, single_logits)


def test_eval_reads_a_compressed_tensors_checkpoint_with_transformers(tiny_models, small_calib, tmp_path, cli_env):
    from modelslim.app.evaluate import EvalArgs, run_eval

    rules = [(DYNAMIC_ACT, WEIGHT_SYM, "*self_attn*"), (None, INT4_GROUP_GPTQ, "*mlp*")]
    model = tiny_models("qwen2")
    out = quantize(model, tmp_path, "ct", config_text(rules, "compressed_tensors_saver", small_calib))
    report = run_eval(EvalArgs(str(model), str(out), str(small_calib), "cpu"))
    tags = {layer["name"]: layer["tag"] for layer in report["layers"]}
    assert tags["model.layers.0.self_attn.q_proj"] == "W8A8_DYNAMIC" and tags["model.layers.1.mlp.down_proj"] == "W4A16"
    assert len(tags) == 2 * 7 and report["model_quant_type"] == "W4A16+W8A8_DYNAMIC"
    assert report["metric"] == "perplexity" and report["quantized"] > 0 and 0.5 < report["ratio"] < 2
    w4 = [layer["rel_l2"] for layer in report["layers"] if layer["tag"] == "W4A16"]
    assert all(0 < error < 0.5 for error in w4)
    assert (out / "eval_report.json").is_file()


def test_quant_type_w4a16_uses_the_default_practice_and_writes_compressed_tensors(tmp_path, cli_env):
    from tests.tiny_models import make_tiny_model

    model = make_tiny_model(tmp_path / "model", "qwen2", torch.float32, hidden_size=128, intermediate_size=256)
    out = tmp_path / "out"
    run_quant(QuantArgs(str(model), str(out), "Qwen2-demo", quant_type="w4a16", device="cpu", yes=True))
    assert "default-w4a16" in (out / "Qwen2-demo_best_practice.yaml").read_text()
    quantization = json.loads((out / "config.json").read_text())["quantization_config"]
    (group,) = quantization["config_groups"].values()
    assert group["format"] == "pack-quantized" and group["input_activations"] is None
    assert group["weights"]["strategy"] == "group" and group["weights"]["group_size"] == 128
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    float_model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    input_ids = torch.randint(0, 200, (1, 16))
    with torch.no_grad():
        theirs, plain = loaded(input_ids=input_ids).logits, float_model(input_ids=input_ids).logits
    assert 0 < ((theirs - plain).norm() / plain.norm()).item() < 0.25  # int4 weights on a random tiny model


def test_eval_without_the_compressed_tensors_package_says_how_to_get_it(tiny_models, small_calib, tmp_path, monkeypatch,
                                                                       cli_env):
    import sys

    from modelslim.app.evaluate import EvalArgs, run_eval
    from modelslim_core.errors import UsageError

    model = tiny_models("qwen2")
    out = quantize(model, tmp_path, "ct", config_text([(None, INT4_GROUP_GPTQ, "*")], "compressed_tensors_saver",
                                                      small_calib))
    monkeypatch.setitem(sys.modules, "compressed_tensors", None)  # import now fails as if not installed
    with pytest.raises(UsageError, match="compressed-tensors checkpoint") as error:
        run_eval(EvalArgs(str(model), str(out), str(small_calib), "cpu"))
    assert "modelslim[interop]" in error.value.hint
