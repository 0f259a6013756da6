"""Layer names as the checkpoint on disk spells them: include/exclude patterns match them, the quantized
checkpoint is written with them, and a processor that selects no layer fails before any calibration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.errors import ConfigError
from modelslim_core.models.checkpoint_names import CheckpointNames
from tests.quant_runs import DYNAMIC_ACT, WEIGHT_SYM

MODEL_TYPE = "MiniMax-M2"


@pytest.fixture(scope="module")
def tiny_minimax(tmp_path_factory):
    from tests.tiny_models import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("minimax_m2"), "minimax_m2")


def config(tmp_path: Path, include: list[str], runner: str = "layer_wise", exclude: list[str] | None = None) -> Path:
    path = tmp_path / "minimax.yaml"
    path.write_text(
        "apiversion: modelslim_v1\nspec:\n"
        f"  runner: {runner}\n  process:\n"
        f"    - {{type: linear_quant, qconfig: {{act: {DYNAMIC_ACT}, weight: {WEIGHT_SYM}}}, include: {include}, "
        f"exclude: {exclude or []}}}\n"
        "  save: [{type: ascendv1_saver, part_file_size: 0}]\n", encoding="utf-8")
    return path


def quantize(model: Path, cfg: Path, out: Path, dry_run: bool = False) -> Path:
    return run_quant(QuantArgs(str(model), str(out), MODEL_TYPE, config_path=str(cfg), device="cpu", yes=True,
                               dry_run=dry_run))


def saved(out: Path) -> tuple[dict[str, str], dict[str, str]]:
    with safe_open(out / "quant_model_weights.safetensors", "pt") as handle:
        dtypes = {name: str(handle.get_slice(name).get_dtype()) for name in handle.keys()}
    return dtypes, json.loads((out / "quant_model_description.json").read_text())


def test_minimax_m2_names_are_inverted_from_transformers_rules(tiny_minimax):
    names = CheckpointNames.for_config(json.loads((tiny_minimax / "config.json").read_text()))
    assert names.tensor_name("model.layers.1.mlp.experts.2.gate_proj.weight") == "model.layers.1.block_sparse_moe.experts.2.w1.weight"
    assert names.tensor_name("model.layers.1.mlp.experts.2.up_proj.weight_scale") == "model.layers.1.block_sparse_moe.experts.2.w3.weight_scale"
    assert names.tensor_name("model.layers.1.mlp.experts.2.down_proj.deq_scale") == "model.layers.1.block_sparse_moe.experts.2.w2.deq_scale"
    assert names.tensor_name("model.layers.0.mlp.gate.weight") == "model.layers.0.block_sparse_moe.gate.weight"
    assert names.tensor_name("model.layers.0.self_attn.q_proj.weight") == "model.layers.0.self_attn.q_proj.weight"
    with safe_open(tiny_minimax / "model.safetensors", "pt") as handle:  # what transformers itself wrote
        assert "model.layers.1.block_sparse_moe.experts.2.w1.weight" in handle.keys()
    qwen = CheckpointNames.for_config({"model_type": "qwen3_moe", "architectures": ["Qwen3MoeForCausalLM"]})
    assert qwen.tensor_name("model.layers.0.mlp.experts.3.up_proj.weight") == "model.layers.0.mlp.experts.3.up_proj.weight"


@pytest.mark.parametrize("include", [["*block_sparse_moe.experts*"], ["*mlp.experts*"]])
def test_expert_patterns_in_either_spelling_quantize_every_expert(tiny_minimax, tmp_path, include, caplog):
    out = quantize(tiny_minimax, config(tmp_path, include), tmp_path / "out")
    assert "loading the whole model instead" not in caplog.text  # layer-wise reads the renamed tensors lazily
    dtypes, description = saved(out)
    experts = [name for name in dtypes if ".experts." in name and name.endswith(".weight")]
    assert len(experts) == 2 * 4 * 3  # layers x experts x (w1, w2, w3)
    assert all(".block_sparse_moe.experts." in name for name in experts)  # the checkpoint's names, not mlp.*
    assert all(dtypes[name] == "I8" and description[name] == "W8A8_DYNAMIC" for name in experts)
    assert not any(".mlp." in name for name in dtypes)
    assert description["model.layers.0.self_attn.q_proj.weight"] == "FLOAT"
    assert description["model.layers.0.block_sparse_moe.gate.weight"] == "FLOAT"


def test_exclude_by_checkpoint_name_keeps_that_expert_float(tiny_minimax, tmp_path):
    cfg = config(tmp_path, ["*"], exclude=["*block_sparse_moe.experts.0.w2", "*gate"], runner="model_wise")
    dtypes, description = saved(quantize(tiny_minimax, cfg, tmp_path / "out"))
    assert description["model.layers.1.block_sparse_moe.experts.0.w2.weight"] == "FLOAT"
    assert description["model.layers.1.block_sparse_moe.experts.1.w2.weight"] == "W8A8_DYNAMIC"


def test_processor_selecting_no_layer_fails_before_loading_weights(tiny_minimax, tmp_path):
    cfg = config(tmp_path, ["*block_sparse_moe.expert.*"])  # typo: expert, not experts
    with pytest.raises(ConfigError) as error:
        quantize(tiny_minimax, cfg, tmp_path / "out")
    message = str(error.value)
    assert "spec.process[0]: include ['*block_sparse_moe.expert.*']" in message
    assert "selects none of the model's" in message and "stay float" in message
    assert "in the checkpoint: " in message or "model.layers.0.self_attn.q_proj" in message
    assert not (tmp_path / "out" / "quant_model_description.json").exists()


def test_dry_run_refuses_the_same_config(tiny_minimax, tmp_path, capsys):
    cfg = config(tmp_path, ["*moe.experts.*.w9"])
    with pytest.raises(ConfigError, match="selects none of the model's"):
        quantize(tiny_minimax, cfg, tmp_path / "out", dry_run=True)
    good = config(tmp_path, ["*block_sparse_moe.experts.*.w1", "*no_such_layer*"])
    quantize(tiny_minimax, good, tmp_path / "out", dry_run=True)
    plan = capsys.readouterr().out
    assert "model.layers.0.mlp.experts.0.gate_proj [32, 64]: W8A8_DYNAMIC" in plan
    assert "'*no_such_layer*'" in plan.split("Unmatched include/exclude patterns:")[1].splitlines()[0]
