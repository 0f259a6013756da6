"""A third-party processor, registered only by its own package's entry point, is usable from YAML."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core import registry
from modelslim_example_plugin.weight_clip import WeightClipProcessor, clip_rows

CONFIG = """\
apiversion: modelslim_v1
spec:
  runner: layer_wise
  process:
    - type: weight_clip
      sigmas: 1.0
      include: ["*mlp.down_proj"]
    - type: linear_quant
      qconfig:
        weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}
  save:
    - type: ascendv1_saver
      part_file_size: 0
"""


def test_plugin_processor_is_discovered_through_its_entry_point():
    assert "weight_clip" in registry.names(registry.PROCESSORS)
    assert registry.load(registry.PROCESSORS, "weight_clip") is WeightClipProcessor
    dist = next(ep.dist.name for ep in registry.entry_points_of(registry.PROCESSORS) if ep.name == "weight_clip")
    assert dist == "modelslim-example-plugin"


def test_clip_rows_limits_each_row_to_mean_plus_minus_k_std():
    weight = torch.tensor([[0.0, 0.0, 0.0, 10.0], [1.0, 2.0, 3.0, 4.0]])
    clip_rows(weight, 1.0)
    # row 0: mean 2.5, std 5 -> [-2.5, 7.5]; row 1: mean 2.5, std sqrt(5/3) = 1.2910 -> [1.2090, 3.7910]
    assert weight[0].tolist() == [0.0, 0.0, 0.0, 7.5]
    assert weight[1].tolist() == pytest.approx([1.2090, 2.0, 3.0, 3.7910], abs=1e-4)


def test_plugin_processor_runs_from_a_yaml_config(tiny_models, tmp_path: Path):
    model_dir = tiny_models("qwen2")
    config = tmp_path / "plugin.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    run_quant(QuantArgs(str(model_dir), str(out), "Qwen2-demo", config_path=str(config), device="cpu"))
    saved = load_file(out / "quant_model_weights.safetensors")
    original = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).model.layers[0].mlp
    for name, linear in (("down_proj", original.down_proj), ("up_proj", original.up_proj)):
        codes = saved[f"model.layers.0.mlp.{name}.weight"].float()
        scale = saved[f"model.layers.0.mlp.{name}.weight_scale"]
        dequantized = codes * scale
        clipped = linear.weight.clone()
        clip_rows(clipped, 1.0)
        reference = clipped if name == "down_proj" else linear.weight
        assert (dequantized - reference).abs().max() <= scale.max() / 2 + 1e-6, name
    # the clip really changed the down projection (the scale shrank)
    assert saved["model.layers.0.mlp.down_proj.weight_scale"].max() < original.down_proj.weight.abs().amax(dim=1).max() / 127


def test_example_plugin_imports_only_the_public_api():
    import ast
    import inspect

    from modelslim_example_plugin import weight_clip

    imported = {node.module for node in ast.walk(ast.parse(inspect.getsource(weight_clip)))
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("modelslim")}
    assert imported == {"modelslim_core.api"}
