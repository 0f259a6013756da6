"""mindie_format_saver on its own: file names (one weight file; shards refused), deq_scale always float32, side
files, types it cannot write refused with a pointer to ascendv1_saver (docs/formats.md)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from modelslim_core.errors import SaveError
from modelslim_core.protocol.qconfig import LinearQConfig
from modelslim_core.quant.quantized_linear import LinearQuantizer
from modelslim_core.runtime.context import DeviceSpec, RunContext
from modelslim_core.runtime.unit import Unit
from modelslim_save_ascend.mindie import MindieFormatSaver, MindieFormatSaverConfig

WEIGHT = {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}
STATIC = LinearQConfig.model_validate({"act": {"scope": "per_tensor", "dtype": "int8", "symmetric": False,
                                               "method": "minmax"}, "weight": WEIGHT})
W8A16 = LinearQConfig.model_validate({"weight": WEIGHT})


def model_dir(tmp_path: Path) -> Path:
    """A pipeline-like directory: top-level model_index.json and a component folder with its config."""
    root = tmp_path / "model"
    (root / "transformer").mkdir(parents=True)
    (root / "model_index.json").write_text('{"_class_name": "WanPipeline"}')
    (root / "README.txt").write_text("not copied: MindIE-SD takes .json and .py only")
    (root / "transformer" / "config.json").write_text('{"num_layers": 1}')
    (root / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text("{}")
    return root


def save(tmp_path: Path, layer: nn.Module, part_file_size: float, source: torch.dtype = torch.float16) -> Path:
    root = model_dir(tmp_path)
    adapter = SimpleNamespace(source_dtype=source, checkpoint_dir=root / "transformer")
    out = tmp_path / "out"
    context = RunContext(adapter=adapter, model_path=root, save_path=out, device=DeviceSpec("cpu"),
                         compute_dtype=torch.float32)
    saver = MindieFormatSaver(MindieFormatSaverConfig(part_file_size=part_file_size), context)
    block = nn.Module()
    block.proj = layer
    block.norm = nn.LayerNorm(16)
    saver.pre_run(block)
    try:
        saver.save_unit(Unit("blocks.0", block, 0))
        saver.finish()
    except BaseException:
        saver.abort()
        raise
    return out


def static_layer() -> nn.Module:
    torch.manual_seed(0)
    calibrating = LinearQuantizer(STATIC).calibrating("blocks.0.proj", nn.Linear(16, 24))
    calibrating(torch.randn(4, 16))
    return calibrating.finish()


def test_single_file_names_carry_the_type_and_deq_scale_is_float32(tmp_path):
    out = save(tmp_path, static_layer(), part_file_size=0)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model_index.json", "quant_model_description_w8a8.json", "quant_model_weight_w8a8.safetensors",
    ]
    tensors = load_file(out / "quant_model_weight_w8a8.safetensors")
    assert tensors["blocks.0.proj.deq_scale"].dtype == torch.float32  # ascendv1 would write int64 for fp16
    assert tensors["blocks.0.norm.weight"].dtype == torch.float16
    description = json.loads((out / "quant_model_description_w8a8.json").read_text())
    assert description == {
        "blocks.0.proj.weight": "W8A8", "blocks.0.proj.quant_bias": "W8A8", "blocks.0.proj.input_scale": "W8A8",
        "blocks.0.proj.input_offset": "W8A8", "blocks.0.proj.deq_scale": "W8A8", "blocks.0.proj.bias": "FLOAT",
        "blocks.0.norm.weight": "FLOAT", "blocks.0.norm.bias": "FLOAT", "model_quant_type": "W8A8",
    }


def test_sharding_is_refused_when_the_config_is_loaded():
    """MindIE-SD opens only quant_model_weight_<type>.safetensors: shards could not be loaded."""
    from modelslim_core.errors import ConfigError
    from modelslim_core.protocol.config import parse_quant_config

    token = {"scope": "per_token", "dtype": "int8", "symmetric": True, "method": "minmax"}
    raw = {"apiversion": "modelslim_v1", "spec": {
        "process": [{"type": "linear_quant", "qconfig": {"act": token, "weight": WEIGHT}}],
        "save": [{"type": "mindie_format_saver", "part_file_size": 4}]}}
    with pytest.raises(ConfigError) as error:
        parse_quant_config(raw, "c.yaml")
    assert "spec.save[0].part_file_size" in str(error.value)
    assert "must be 0 for mindie_format_saver (got 4" in str(error.value) and "quant_model_weight_<type>" in str(error.value)
    del raw["spec"]["save"][0]["part_file_size"]  # the default is one file
    assert parse_quant_config(raw, "c.yaml").spec.save[0].part_file_size == 0


def test_output_is_private_whatever_the_umask(tmp_path):
    previous = os.umask(0o002)
    try:
        out = save(tmp_path, static_layer(), part_file_size=0)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        "config.json": 0o640, "model_index.json": 0o640, "quant_model_description_w8a8.json": 0o640,
        "quant_model_weight_w8a8.safetensors": 0o640}


def test_unquantized_output_has_no_type_suffix(tmp_path):
    out = save(tmp_path, nn.Linear(16, 8), part_file_size=0)
    assert (out / "quant_model_weight.safetensors").is_file()
    assert json.loads((out / "quant_model_description.json").read_text())["model_quant_type"] == "FLOAT"


def test_w8a16_is_refused_naming_ascendv1_saver(tmp_path):
    layer = LinearQuantizer(W8A16).quantize("blocks.0.proj", nn.Linear(16, 8))
    with pytest.raises(SaveError, match="mindie_format_saver cannot write.*ascendv1_saver") as error:
        save(tmp_path, layer, part_file_size=0)
    assert "blocks.0.proj is quantized as W8A16" in str(error.value)
    assert not list((tmp_path / "out").glob("*.safetensors"))


def test_per_group_layers_are_refused_when_the_config_is_loaded():
    from modelslim_core.errors import ConfigError
    from modelslim_core.protocol.config import parse_quant_config

    grouped = {"scope": "per_group", "dtype": "int8", "symmetric": True, "method": "minmax", "ext": {"group_size": 32}}
    token = {"scope": "per_token", "dtype": "int8", "symmetric": True, "method": "minmax"}
    item = {"type": "linear_quant", "qconfig": {"act": token, "weight": grouped}}
    for process in ([item], [{"type": "group", "configs": [item]}]):
        raw = {"apiversion": "modelslim_v1", "spec": {"process": process, "save": [{"type": "mindie_format_saver"}]}}
        with pytest.raises(ConfigError) as error:
            parse_quant_config(raw, "c.yaml")
        assert "spec.save[0].type: mindie_format_saver cannot write per-group weights (W8A8_DYNAMIC" in str(error.value)
        assert "spec.process[0]" in str(error.value) and "ascendv1_saver" in str(error.value)
    raw["spec"]["save"] = [{"type": "ascendv1_saver"}]
    parse_quant_config(raw, "c.yaml")  # ascendv1 records group_size
