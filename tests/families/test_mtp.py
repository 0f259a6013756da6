"""MTP layers: a release's multi-token-prediction tensors (after the last decoder layer, or under `mtp.`) are
carried to the quantized output unchanged and tagged FLOAT — vLLM-Ascend serves the MTP draft unquantized but
looks every draft linear up in the description — dequantized when the release ships them FP8, and the reference
runtime still reloads the checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from modelslim.engines import vllm_ascend
from modelslim.engines.checkpoint import EngineCheckpoint
from modelslim.engines.conformance import check_saved
from tests.families._helpers import dynamic_w8a8_config, float_relative_error, quantize
from tests.families._sources import write_fp8_source
from tests.families._tiny import make_family_model
from tests.families._tiny_vlm import add_tensors
from tests.tiny_models import make_tiny_model


#: Where each style keeps the projection and the two norms that join the embedding with the previous hidden state.
JOIN = {"deepseek": ("{root}eh_proj", "{root}enorm", "{root}hnorm"),
        "qwen": ("mtp.fc", "mtp.pre_fc_norm_embedding", "mtp.pre_fc_norm_hidden")}


def _mtp_like(tensors: dict[str, torch.Tensor], layer: str, root: str, hidden: int,
              style: str = "deepseek") -> dict[str, torch.Tensor]:
    """An MTP module: a copy of decoder layer `layer`'s tensors under `root` plus the projection and norms that
    join the embedding with the previous hidden state (DeepSeek's eh_proj/enorm/hnorm, Qwen's fc/pre_fc_norm_*)."""
    torch.manual_seed(7)
    mtp = {root + name[len(layer):]: t.clone() + 0.01 * torch.randn_like(t.float()).to(t.dtype)
           for name, t in tensors.items() if name.startswith(layer)}
    dtype = next(iter(mtp.values())).dtype
    projection, *norms = (name.format(root=root) for name in JOIN[style])
    mtp[f"{projection}.weight"] = (0.05 * torch.randn(hidden, 2 * hidden)).to(dtype)
    for norm in norms:
        mtp[f"{norm}.weight"] = torch.ones(hidden, dtype=dtype)
    return mtp


def _with_mtp(model_dir, root_of, style: str = "deepseek"):
    weights = model_dir / "model.safetensors"
    tensors = load_file(weights)
    config = json.loads((model_dir / "config.json").read_text())
    layers = config["num_hidden_layers"]
    mtp = _mtp_like(tensors, f"model.layers.{layers - 1}.", root_of(layers), config["hidden_size"], style)
    add_tensors(weights, mtp)
    return mtp


def _engine_loads_unquantized(out, linears: list[str]) -> list[str]:
    """The MTP draft linears vLLM-Ascend's quantization config would NOT load unquantized."""
    wrong = []
    with vllm_ascend._engine(EngineCheckpoint.open(out), "default") as (quant_config, adapters):
        for linear in linears:
            layer = vllm_ascend.LAYER_CLASSES["ColumnParallelLinear"]()
            layer.prefix = linear
            if isinstance(quant_config.get_quant_method(layer, linear), adapters.AscendLinearMethod):
                wrong.append(linear)
    return wrong


#: (tiny model kind, --model_type, where the release keeps its MTP layer, style, the prefix recorded as carried)
CASES = [
    ("glm4_moe", "GLM-4.7", lambda layers: f"model.layers.{layers}.", "deepseek", "model.layers.3."),
    ("qwen3_next", "Qwen3-Next-80B-A3B-Instruct", lambda layers: "mtp.layers.0.", "qwen", "mtp."),
]


@pytest.mark.parametrize(("kind", "model_type", "root_of", "style", "carried"), CASES, ids=[case[0] for case in CASES])
def test_mtp_layers_are_carried_float(tmp_path, kind, model_type, root_of, style, carried):
    model_dir = make_family_model(tmp_path / "model", kind)
    mtp = _with_mtp(model_dir, root_of, style)
    out = quantize(model_dir, tmp_path / "out", model_type, dynamic_w8a8_config(tmp_path, "layer_wise", "*mlp.*"))
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["metadata"]["carried_float"] == [carried]
    with safe_open(out / "quant_model_weights.safetensors", framework="pt") as handle:
        for name, tensor in mtp.items():
            assert description[name] == "FLOAT"
            assert torch.equal(handle.get_tensor(name), tensor), name
    assert float_relative_error(model_dir, out) < 0.05  # the reference runtime reloads past the carried tensors
    assert [str(p) for p in check_saved(out, "vllm-ascend")] == []
    linears = sorted({name.removesuffix(".weight") for name in mtp if name.endswith(("proj.weight", "fc.weight"))})
    assert linears and _engine_loads_unquantized(out, linears) == []


def test_fp8_mtp_layer_is_dequantized_when_carried(tmp_path, monkeypatch):
    """DeepSeek-V3-style release: the MTP layer is FP8 blocks like the rest; the output holds it in bf16, streamed
    a block of rows at a time when large (here: every tensor over 256 bytes)."""
    float_dir = make_tiny_model(tmp_path / "float", "deepseek_v3")
    mtp = _with_mtp(float_dir, lambda layers: f"model.layers.{layers}.")
    source = write_fp8_source(float_dir, tmp_path / "fp8")
    monkeypatch.setattr("modelslim_core.quant.row_blocks.BLOCK_BYTES", 256)
    out = quantize(source, tmp_path / "out", "DeepSeek-V3", dynamic_w8a8_config(tmp_path, "layer_wise", "*mlp.*"))
    description = json.loads((out / "quant_model_description.json").read_text())
    with safe_open(out / "quant_model_weights.safetensors", framework="pt") as handle:
        for name, tensor in mtp.items():
            saved = handle.get_tensor(name)
            assert description[name] == "FLOAT" and saved.dtype == torch.bfloat16, name
            error = ((saved.float() - tensor.float()).norm() / tensor.float().norm()).item()
            assert error < 0.05, (name, error)  # FP8 blocks, dequantized
        assert not any(name.endswith("weight_scale_inv") for name in handle.keys())
