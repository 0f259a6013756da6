"""tools/bench_scale.py's own arithmetic: the float-forward floor's weight count and the w8a8c8 case's config."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

from tools.bench_scale import config_text, forward_elements


def test_forward_elements_count_decoder_matrices_and_routed_experts_by_their_token_share(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"n_routed_experts": 4, "num_experts_per_tok": 2}))
    save_file({
        "model.embed_tokens.weight": torch.zeros(100, 8),  # a lookup: not a matmul
        "lm_head.weight": torch.zeros(100, 8),  # not run during calibration
        "model.layers.0.input_layernorm.weight": torch.zeros(8),  # a vector
        "model.layers.0.self_attn.q_proj.weight": torch.zeros(16, 8),  # 128
        "model.layers.0.mlp.shared_experts.up_proj.weight": torch.zeros(4, 8),  # 32, every token
        "model.layers.0.mlp.experts.0.up_proj.weight": torch.zeros(4, 8),  # 32, half the tokens
        "model.layers.0.mlp.experts.1.up_proj.weight": torch.zeros(4, 8),  # 32, half the tokens
    }, str(tmp_path / "model.safetensors"))
    assert forward_elements(tmp_path) == 128 + 32 + (32 + 32) / 2


def test_w8a8c8_case_adds_the_kv_cache_to_the_practice_forward(tmp_path: Path) -> None:
    spec = yaml.safe_load(config_text("w8a8c8_practice", [], tmp_path / "calib.jsonl"))["spec"]
    group = spec["process"][0]
    assert group["type"] == "group"
    assert [c["type"] for c in group["configs"]] == ["linear_quant", "linear_quant", "dynamic_cache"]
    assert group["configs"][2]["qconfig"] == {"scope": "per_channel", "dtype": "int8", "symmetric": True,
                                              "method": "minmax"}
    assert spec["dataset"] == str(tmp_path / "calib.jsonl")
