"""The memory budget: --max_memory parsing, the plan per piece with the measured baseline, a clear refusal
naming the piece that cannot fit (before anything is loaded), and plan vs measured in quant_report.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim.cli.parser import parse_memory_size
from modelslim_core.errors import MemoryBudgetError
from modelslim_runners.budget import MemoryBudget, kind_of

CONFIG = """\
apiversion: modelslim_v1
spec:
  runner: layer_wise
  process:
    - type: linear_quant
      qconfig:
        act: {scope: per_token, dtype: int8, symmetric: true, method: minmax}
        weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}
  save: [{type: ascendv1_saver, part_file_size: 0}]
"""


@pytest.mark.parametrize(("text", "expected"), [("4GiB", 4 * 2**30), ("4G", 4 * 2**30), ("3500MiB", 3500 * 2**20),
                                                ("1.5gb", 1_500_000_000), ("512", 512)])
def test_memory_sizes(text: str, expected: int) -> None:
    assert parse_memory_size(text) == expected


@pytest.mark.parametrize("text", ["", "4 parsecs", "-1G", "0"])
def test_bad_memory_sizes_are_usage_errors(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="4GiB|positive"):
        parse_memory_size(text)


def test_expert_numbers_fold_into_one_kind_of_piece() -> None:
    assert kind_of("mlp.experts.17.gate_proj") == "mlp.experts.*.gate_proj"
    assert kind_of("mlp.experts.3") == "mlp.experts.*"
    assert kind_of("self_attn.q_proj") == "self_attn.q_proj"


def test_a_piece_over_budget_is_refused_with_its_name_and_need() -> None:
    budget = MemoryBudget(limit=2 * 2**30, baseline=2**30, assumptions="test")
    budget.check_plan("model.layers.0.mlp.down_proj", 2**29)  # fits: 1.5 GiB of 2
    with pytest.raises(MemoryBudgetError) as error:
        budget.check_plan("model.layers.0.mlp.down_proj", 2**31)
    assert "model.layers.0.mlp.down_proj needs ~2.00 GiB" in error.value.message
    assert "baseline of 1.00 GiB" in error.value.message and "budget of 2.00 GiB" in error.value.message


def test_too_small_max_memory_stops_before_any_weight_is_written(tiny_models, tmp_path: Path, cli_env) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    with pytest.raises(MemoryBudgetError, match=r"model\.layers\.\d+\.\S+ needs ~.* more than the memory budget of 0\.05 GiB"):
        run_quant(QuantArgs(str(tiny_models("qwen2")), str(out), "Qwen2-demo", config_path=str(config), device="cpu",
                            max_memory=50 * 2**20))
    assert not list(out.glob("*.safetensors")) and not (out / "quant_model_description.json").exists()


def test_report_gives_plan_and_measured_memory_per_piece(tiny_models, tmp_path: Path, cli_env) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "out"
    run_quant(QuantArgs(str(tiny_models("deepseek_v3")), str(out), "DeepSeek-V3", config_path=str(config), device="cpu",
                        max_memory=64 * 2**30))
    memory = json.loads((out / "quant_report.json").read_text())["stages"][-1]["memory"]
    assert memory["limit_bytes"] == 64 * 2**30 and memory["baseline_bytes"] > 0
    experts = memory["pieces"]["mlp.experts.*.gate_proj"]
    assert experts["count"] == 2 * 4 and experts["plan_bytes"] > 0 and experts["measured_bytes"] >= 0
