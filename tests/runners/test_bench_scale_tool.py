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


def test_capped_run_streams_stderr_to_the_log_and_measures_the_child(tmp_path: Path) -> None:
    import sys

    from tools.capped_run import run_capped

    log = tmp_path / "run.log"
    result = run_capped([sys.executable, "-c", "import sys; print('first', file=sys.stderr); "
                         "b = bytearray(64 * 2**20); print('second', file=sys.stderr)"], 2**30, log=log)
    assert result.returncode == 0
    assert log.read_text() == "first\nsecond\n" == result.stderr
    assert result.peak_rss >= 64 * 2**20


def test_projected_times_scale_the_measured_layer_and_expert_times() -> None:
    from tools.bench_scale import projected_seconds

    dense_only = {"stages": [{"units": [{"seconds": 10.0}, {"seconds": 30.0}]}]}
    assert projected_seconds("a", dense_only, 64) == {"Qwen2.5-72B (80 layers)": 20.0 * 80}
    # DeepSeek-V3: dense 10 s; the MoE layer costs 10 s more than a dense layer per 64 experts.
    moe = {"stages": [{"units": [{"seconds": 10.0}, {"seconds": 20.0}]}]}
    per_expert = 10.0 / 64
    assert projected_seconds("b", moe, 64) == {
        "DeepSeek-V3 (3 dense + 58 MoE layers)": 3 * 10.0 + 58 * (10.0 + 256 * per_expert)}


def test_table_gives_plan_vs_measured_per_piece(capsys) -> None:
    from tools.bench_scale import print_table

    row = {"case": "b", "scheme": "w8a8_practice", "cap_gib": 4.0, "returncode": 0, "peak_rss_gib": 3.5,
           "wall_s": 100.0, "cpu_s": 90.0, "load_before": 1.0, "baseline_gib": 0.8, "piece_plan_gib": 2.6,
           "piece_measured_gib": 2.0, "pieces": {"trunk": {"count": 1, "plan_gib": 2.6, "measured_gib": 2.0},
                                                 "routed experts (group)": {"count": 8, "plan_gib": 1.0,
                                                                            "measured_gib": 0.0}}}
    print_table([row])
    out = capsys.readouterr().out
    assert "baseline 0.80G + largest piece 2.60G = 3.40G vs measured peak 3.50G" in out
    assert "piece trunk (x1): plan 2.60G, measured 2.00G above the baseline (plan/measured 1.30x)" in out
    assert "piece routed experts (group) (x8): plan 1.00G, measured 0.00G above the baseline (plan/measured -)" in out


def test_w4a8_cases_are_written_in_formats_their_engines_load(tmp_path: Path) -> None:
    spec = yaml.safe_load(config_text("w4a8_per_channel", [], tmp_path / "calib.jsonl"))["spec"]
    dense, experts = spec["process"][0]["configs"]
    assert experts["include"] == ["*mlp.experts.*"] and experts["qconfig"]["weight"]["dtype"] == "int4"
    assert dense["qconfig"]["weight"]["dtype"] == "int8" and "dataset" not in spec  # data-free
    gptq = yaml.safe_load(config_text("w4a8_gptq", [], tmp_path / "calib.jsonl"))["spec"]
    assert gptq["save"] == [{"type": "compressed_tensors_saver"}] and gptq["dataset"] == str(tmp_path / "calib.jsonl")
