"""QuaRot through `msmodelslim quant`: the saved extras (optional/quarot.safetensors, online rotation tensors,
description metadata/optional, untied config) and reloading through the reference runtime."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.errors import CheckpointError
from modelslim_core.reference_runtime import load_quantized_model
from tests.quant_runs import DYNAMIC_ACT, ONLINE_ROTATIONS_TARGET, WEIGHT_SYM, corrupt
from tests.rotation._helpers import load, logits, relative_error
from tests.tiny_models import make_tiny_model


def quarot_config(dataset, runner: str, quarot: str, quant: str = "") -> str:
    return f"""\
apiversion: modelslim_v1
spec:
  runner: {runner}
  process:
    - {{type: quarot, {quarot}}}
{quant}  save: [{{type: ascendv1_saver, part_file_size: 0}}]
  dataset: {dataset}
"""


W8A8_DYNAMIC = f"    - {{type: linear_quant, qconfig: {{act: {DYNAMIC_ACT}, weight: {WEIGHT_SYM}}}, exclude: ['lm_head']}}\n"


def quantize(model_dir, tmp_path, dataset, runner, quarot, quant="") -> "Path":
    config = tmp_path / "quarot.yaml"
    config.write_text(quarot_config(dataset, runner, quarot, quant))
    out = tmp_path / "out"
    run_quant(QuantArgs(str(model_dir), str(out), "Qwen2-demo", config_path=str(config), device="cpu", tags=ONLINE_ROTATIONS_TARGET))
    return out


@pytest.fixture(scope="module")
def tied_fp32(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tied"), "qwen2", torch.float32, tie_word_embeddings=True)


@pytest.mark.parametrize("runner", ["model_wise", "layer_wise"])
def test_float_quarot_checkpoint_reloads_with_the_same_logits(tied_fp32, tmp_path, small_calib, cli_env, runner):
    out = quantize(tied_fp32, tmp_path, small_calib, runner,
                   "online: true, down_proj_online_layers: [1], max_tp_size: 2")
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["optional"] == {"quarot": {"rotation_map": {"global_rotation": "optional/quarot.safetensors"}}}
    assert description["metadata"] == {"serving_dtype": "float16", "quarot": {
        "max_tp_size": 2,
        "heads_rotation": {"layers": ["model.layers.0.self_attn.o_proj", "model.layers.1.self_attn.o_proj"]},
        "kronecker_rotation": {"layers": ["model.layers.1.mlp.down_proj"]},
    }}
    assert list(description)[-5:] == ["version", "model_quant_type", "metadata", "group_size", "optional"]
    with safe_open(out / "optional" / "quarot.safetensors", framework="pt") as handle:
        assert list(handle.keys()) == ["global_rotation"]
        rotation = handle.get_tensor("global_rotation")
    assert rotation.dtype == torch.float32 and rotation.shape == (64, 64)
    assert torch.allclose(rotation @ rotation.T, torch.eye(64), atol=1e-6)
    with safe_open(out / "quant_model_weights.safetensors", framework="pt") as handle:
        saved = {name: handle.get_slice(name) for name in handle.keys()}
        shapes = {name: (s.get_dtype(), s.get_shape()) for name, s in saved.items()}
    assert shapes["model.layers.0.self_attn.o_proj.heads_rotation"] == ("F32", [4, 4])
    assert "model.layers.0.mlp.down_proj.kronecker_rotation_m" not in shapes  # layer 0 is not listed
    assert shapes["model.layers.1.mlp.down_proj.kronecker_rotation_m"] == ("F32", [8, 8])
    assert shapes["model.layers.1.mlp.down_proj.kronecker_rotation_n"] == ("F32", [16, 16])
    assert "model.layers.0.self_attn.o_proj.heads_rotation" not in description  # untagged, as the format has it
    assert description["lm_head.weight"] == "FLOAT" and "lm_head.weight" in shapes
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
    expected = logits(load(tied_fp32))
    reloaded = load_quantized_model(tied_fp32, out)
    assert relative_error(logits(reloaded), expected) < 1e-4


def test_quarot_with_w8a8_dynamic_reloads_close_to_float(tiny_models, tmp_path, small_calib, cli_env):
    model_dir = tiny_models("qwen3", torch.bfloat16)
    out = quantize(model_dir, tmp_path, small_calib, "layer_wise", "export_extra_info: false", W8A8_DYNAMIC)
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["optional"] == {} and description["metadata"] == {"serving_dtype": "bfloat16"}
    assert not (out / "optional").exists()
    assert description["model.layers.0.mlp.down_proj.weight"] == "W8A8_DYNAMIC"
    expected = logits(load(model_dir))
    assert relative_error(logits(load_quantized_model(model_dir, out)), expected) < 0.05


def test_missing_or_broken_rotation_tensor_is_refused(tiny_models, tmp_path, small_calib, cli_env):
    model_dir = tiny_models("qwen2", torch.bfloat16)
    out = quantize(model_dir, tmp_path, small_calib, "model_wise", "online: true, max_tp_size: 4")
    load_quantized_model(model_dir, out)
    name = "model.layers.1.self_attn.o_proj.heads_rotation"
    with pytest.raises(CheckpointError, match="declared by metadata.quarot but missing"):
        load_quantized_model(model_dir, corrupt(out, tmp_path, lambda tensors, _: tensors.pop(name)))
    with pytest.raises(CheckpointError, match="square float32"):
        load_quantized_model(model_dir, corrupt(out, tmp_path / "b", lambda t, _: t.__setitem__(name, t[name].half())))


def test_online_rotations_stay_in_front_of_quantized_linears(tiny_models, tmp_path, small_calib, cli_env):
    """The online rotation moves with its slot when linear_quant replaces the linear: static activation ranges
    are calibrated on rotated inputs, and the reloaded checkpoint stays close to the float model."""
    model_dir = tiny_models("llama", torch.bfloat16)
    static = ("    - {type: linear_quant, qconfig: {act: {scope: per_tensor, dtype: int8, symmetric: false, "
              f"method: minmax}}, weight: {WEIGHT_SYM}}}, include: ['model.layers.*']}}\n")
    out = quantize(model_dir, tmp_path, small_calib, "layer_wise",
                   "online: true, down_proj_online_layers: [0, 1], max_tp_size: 1", static)
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["model.layers.1.mlp.down_proj.weight"] == "W8A8"
    assert description["metadata"]["quarot"]["max_tp_size"] == 1
    expected = logits(load(model_dir))
    assert relative_error(logits(load_quantized_model(model_dir, out)), expected) < 0.05
