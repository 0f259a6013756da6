"""`msmodelslim check`: the engine conformance check as a command, on a good and on a broken checkpoint."""

from __future__ import annotations

import json

import torch

from modelslim.cli.main import main
from tests.engines._harness import config_yaml, quantize
from tests.quant_runs import corrupt


def test_check_passes_a_good_checkpoint_and_fails_a_broken_one(tiny_models, small_calib, tmp_path, capsys):
    out = quantize(tiny_models("qwen2", torch.bfloat16), tmp_path / "out",
                   config_yaml({"*self_attn*": "W8A8", "*mlp*": "W8A8_DYNAMIC"}, small_calib))
    capsys.readouterr()
    assert main(["check", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: loads in vllm-ascend"

    def break_it(tensors, description):
        tensors["model.layers.0.mlp.up_proj.weight_scale"] = torch.ones(128, 2)  # a per-group shape
        description["model.layers.1.self_attn.o_proj.weight"] = "WFP8AFP8_DYNAMIC"  # the reference's FP8 name

    broken = corrupt(out, tmp_path, break_it)
    assert main(["check", str(broken), "--engine", "vllm-ascend"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines and all(line.startswith(f"{broken}: vllm-ascend: ") for line in lines)
    assert any("model.layers.0.mlp.up_proj.weight_scale: shape [128, 2], but vLLM-Ascend's W8A8_DYNAMIC scheme "
               "allocates [128, 1]" in line for line in lines)
    assert any("model.layers.1.self_attn.o_proj: vLLM-Ascend refuses this layer: NotImplementedError" in line
               and "WFP8AFP8_DYNAMIC" in line for line in lines)
    assert "check failed" in captured.err and "Traceback" not in captured.err


def test_check_refuses_a_directory_without_a_description(tmp_path, capsys):
    assert main(["check", str(tmp_path)]) == 1
    assert "not a quantized checkpoint" in capsys.readouterr().err


def test_check_of_mindie_output_against_vllm_ascend_says_why(tmp_path, capsys):
    (tmp_path / "quant_model_description_w8a8.json").write_text(json.dumps({"model_quant_type": "W8A8"}))
    assert main(["check", str(tmp_path), "--engine", "vllm-ascend"]) == 1
    assert "this is MindIE-SD output" in capsys.readouterr().out
