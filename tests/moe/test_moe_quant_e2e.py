"""Qwen3-MoE and DeepSeek-V3 through the shipped practices: per-expert tensors, reload, float agreement."""

from __future__ import annotations

import logging

import pytest
import torch
from safetensors import safe_open

from tests.moe._helpers import MODEL_TYPES, quantize, relative_logit_error, saved, tiny_practice

H, I = 64, 32  # tiny hidden size and expert intermediate size (tests/tiny_models.py)
IDS = torch.arange(3, 60).reshape(1, -1)


def moe_layers(arch: str) -> list[int]:
    return [0, 1] if arch == "qwen3_moe" else [1, 2]  # DeepSeek: layer 0 is dense (first_k_dense_replace=1)


def expected_expert_tensors(export_type: str, proj: str) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    out, inp = (H, I) if proj == "down_proj" else (I, H)
    if export_type == "W4A8_DYNAMIC":  # packed int4 rows, scale_bias [out,1] / [hidden,16] (format §1.6, §1.9)
        return {"weight": (torch.int8, (out // 2, inp)), "weight_scale": (torch.float32, (out, 1)),
                "weight_offset": (torch.float32, (out, 1)),
                "scale_bias": (torch.float32, (out, 16) if proj == "down_proj" else (out, 1))}
    return {"weight": (torch.int8, (out, inp)), "weight_scale": (torch.float32, (out, 1)),
            "weight_offset": (torch.float32, (out, 1))}


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory):
    """Every (arch, quant type) practice run once, model-wise; cached for the module."""
    cache = {}

    def get(arch: str, quant_type: str, runner: str = "model_wise"):
        key = (arch, quant_type, runner)
        if key not in cache:
            tmp = tmp_path_factory.mktemp(f"{arch}-{quant_type}-{runner}")
            dataset = tmp / "calib.jsonl"
            dataset.write_text('{"text": "Mixture of experts calibration: 1 2 3, the quick brown fox."}\n'
                               '{"text": "def f(x):\\n    return x * 2"}\n')
            model = tiny_models(arch, torch.bfloat16)
            config = tiny_practice(arch, quant_type, moe_layers(arch)[-1], dataset, runner, tmp / "practice.yaml")
            cache[key] = (model, quantize(model, tmp / "out", MODEL_TYPES[arch], config))
        return cache[key]

    return get


@pytest.mark.parametrize("arch", ["qwen3_moe", "deepseek_v3", "deepseek_v32"])
@pytest.mark.parametrize("quant_type", ["w8a8", "w4a8"])
def test_every_expert_has_its_tensors(runs, arch, quant_type):
    _, out = runs(arch, quant_type)
    description, metas = saved(out)
    first, last = moe_layers(arch)
    for layer in (first, last):
        export = "W4A8_DYNAMIC" if quant_type == "w4a8" and layer != last else "W8A8_DYNAMIC"
        for expert in range(4):
            for proj in ("gate_proj", "up_proj", "down_proj"):
                prefix = f"model.layers.{layer}.mlp.experts.{expert}.{proj}"
                for suffix, meta in expected_expert_tensors(export, proj).items():
                    assert metas[f"{prefix}.{suffix}"] == meta, f"{prefix}.{suffix}"
                    assert description[f"{prefix}.{suffix}"] == export
        # the router is never quantized; no fused experts tensor survives
        assert description[f"model.layers.{layer}.mlp.gate.weight"] == "FLOAT"
        assert metas[f"model.layers.{layer}.mlp.gate.weight"] == (torch.bfloat16, (4, H))
    assert not [name for name in metas if "gate_up_proj" in name or name.endswith("experts.down_proj")]
    assert description["model_quant_type"] == ("W8A8" if quant_type == "w8a8" else "W8A8_DYNAMIC")


def test_deepseek_v32_keeps_the_indexer_float(runs):
    _, out = runs("deepseek_v32", "w8a8")
    description = saved(out)[0]
    for name in ("wq_b", "wk", "weights_proj"):
        assert description[f"model.layers.1.self_attn.indexer.{name}.weight"] == "FLOAT"
    assert description["model.layers.1.self_attn.q_b_proj.weight"] == "W8A8"


def test_deepseek_specific_tensors(runs):
    _, out = runs("deepseek_v3", "w4a8")
    description, metas = saved(out)
    for layer in (1, 2):  # routing bias kept (vLLM-Ascend's router needs it), shared experts like a dense MLP
        assert description[f"model.layers.{layer}.mlp.gate.e_score_correction_bias"] == "FLOAT"
        assert description[f"model.layers.{layer}.mlp.shared_experts.down_proj.weight"] == "W8A8_DYNAMIC"
    assert description["model.layers.0.mlp.gate_proj.weight"] == "W8A8_DYNAMIC"  # the dense first layer
    for proj in ("q_a_proj", "q_b_proj", "kv_a_proj_with_mqa", "o_proj"):
        assert description[f"model.layers.1.self_attn.{proj}.weight"] == "W8A8_DYNAMIC"
    assert description["model.layers.1.self_attn.kv_b_proj.weight"] == "FLOAT"  # MLA absorbs kv_b_proj
    _, w8a8 = runs("deepseek_v3", "w8a8")
    assert saved(w8a8)[0]["model.layers.1.self_attn.q_a_proj.weight"] == "W8A8"  # static attention


@pytest.mark.parametrize("arch", ["qwen3_moe", "deepseek_v3", "deepseek_v32"])
@pytest.mark.parametrize("quant_type, bound", [("w8a8", 0.05), ("w4a8", 0.08)])
def test_reference_runtime_reloads_and_matches_float(runs, arch, quant_type, bound):
    model, out = runs(arch, quant_type)
    error = relative_logit_error(model, out, IDS)
    assert 0 < error < bound, error


@pytest.mark.parametrize("arch", ["qwen3_moe", "deepseek_v3"])
def test_layer_wise_writes_the_same_checkpoint(runs, arch):
    _, model_wise = runs(arch, "w8a8")
    _, layer_wise = runs(arch, "w8a8", "layer_wise")
    assert saved(layer_wise)[0] == saved(model_wise)[0]
    with safe_open(model_wise / "quant_model_weights.safetensors", "pt") as a, \
            safe_open(layer_wise / "quant_model_weights.safetensors", "pt") as b:
        assert set(a.keys()) == set(b.keys())
        for name in a.keys():
            assert torch.equal(a.get_tensor(name), b.get_tensor(name)), name


def test_quant_type_reaches_the_moe_practices(tiny_models, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = quantize(tiny_models("qwen3_moe", torch.bfloat16), tmp_path / "out", "Qwen3-30B-A3B", quant_type="w4a8")
    assert "qwen3_moe-30b-w4a8" in (out / "Qwen3-30B-A3B_best_practice.yaml").read_text()
    assert "matched no layer" in caplog.text  # the 30B practice's layer 47 does not exist in the 2-layer model
    out = quantize(tiny_models("deepseek_v3", torch.bfloat16), tmp_path / "ds", "DeepSeek-R1", quant_type="w4a8")
    assert "deepseek_v3-w4a8" in (out / "DeepSeek-R1_best_practice.yaml").read_text()


def test_deepseek_mtp_layer_is_carried_float_and_said_so(tiny_models, tmp_path, caplog):
    """Hub DeepSeek checkpoints carry an MTP layer after the last decoder layer; the output carries it FLOAT
    (vLLM-Ascend loads the MTP draft unquantized and looks its linears up in the description)."""
    import shutil

    from safetensors.torch import load_file, save_file

    model = tmp_path / "with-mtp"
    shutil.copytree(tiny_models("deepseek_v3", torch.bfloat16), model)
    tensors = load_file(model / "model.safetensors")
    tensors["model.layers.3.eh_proj.weight"] = torch.zeros(H, 2 * H, dtype=torch.bfloat16)
    tensors["model.layers.3.enorm.weight"] = torch.ones(H, dtype=torch.bfloat16)
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    caplog.set_level(logging.INFO)
    out = quantize(model, tmp_path / "out", "DeepSeek-V3", quant_type="w4a8")
    assert "Carrying 2 tensors of the multi-token-prediction layer(s) (e.g. model.layers.3." in caplog.text
    carried = {name: tag for name, tag in saved(out)[0].items() if name.startswith("model.layers.3.")}
    assert carried == {"model.layers.3.eh_proj.weight": "FLOAT", "model.layers.3.enorm.weight": "FLOAT"}


@pytest.mark.parametrize("transposed", [False, True])
def test_layer_wise_reads_experts_from_a_fused_checkpoint(runs, tmp_path, caplog, transposed):
    """Checkpoints that store experts fused ([E, 2I, H] / [E, H, I], or transposed as Qwen3-VL-MoE does) are
    sliced per expert while loading layer by layer: the result equals the run on the per-expert checkpoint."""
    import shutil

    from safetensors.torch import load_file, save_file

    source, reference = runs("qwen3_moe", "w8a8")
    fused_dir = tmp_path / "fused"
    shutil.copytree(source, fused_dir)
    tensors = load_file(fused_dir / "model.safetensors")
    for layer in moe_layers("qwen3_moe"):
        prefix = f"model.layers.{layer}.mlp.experts"
        per = {proj: torch.stack([tensors.pop(f"{prefix}.{e}.{proj}.weight") for e in range(4)])
               for proj in ("gate_proj", "up_proj", "down_proj")}
        gate_up, down = torch.cat([per["gate_proj"], per["up_proj"]], dim=1), per["down_proj"]
        if transposed:
            gate_up, down = gate_up.transpose(1, 2), down.transpose(1, 2)
        tensors[f"{prefix}.gate_up_proj"], tensors[f"{prefix}.down_proj"] = gate_up.contiguous(), down.contiguous()
    save_file(tensors, fused_dir / "model.safetensors", metadata={"format": "pt"})
    config = tmp_path / "practice.yaml"
    config.write_text((reference / "Qwen3-30B-A3B_best_practice.yaml").read_text().replace("runner: model_wise", "runner: layer_wise"))
    caplog.set_level(logging.INFO)
    out = quantize(fused_dir, tmp_path / "out", "Qwen3-30B-A3B", config)
    assert "Checkpoint keys differ" not in caplog.text  # really layer by layer, not a whole-model fallback
    expected, got = load_file(reference / "quant_model_weights.safetensors"), load_file(out / "quant_model_weights.safetensors")
    assert set(got) == set(expected)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
