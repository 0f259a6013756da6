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
from modelslim_runners.budget import (GPTQ_WORKING_HESSIANS, MemoryBudget, calibrated_weights_need, kind_of,
                                      rewrites_weights)

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


def test_calibrated_plan_counts_stored_weights_codes_running_linear_and_gptq_working_set() -> None:
    shapes = [(6, 4), (4, 8)]  # 24 + 32 = 56 elements; widest input 8
    compute = 56 * 4
    # bf16 storage: 2 bytes stored + 1 byte of codes per element, the largest linear (32) in float32 twice.
    assert calibrated_weights_need(compute, 4, 2, shapes, hessians=False, rewrites=False) == 56 * 2 + 56 + 2 * 32 * 4
    # a rewriting processor (smoothing) promotes the stored weights: twice the stored bytes.
    assert calibrated_weights_need(compute, 4, 2, shapes, hessians=False, rewrites=True) == 56 * 4 + 56 + 2 * 32 * 4
    # GPTQ: every Hessian (in x in float32) plus the widest one's working set.
    hessians = 4 * (4 * 4 + 8 * 8 + GPTQ_WORKING_HESSIANS * 8 * 8)
    assert calibrated_weights_need(compute, 4, 2, shapes, hessians=True, rewrites=False) == 56 * 3 + 2 * 32 * 4 + hessians
    # held in the compute dtype: 3x.
    assert calibrated_weights_need(compute, 4, 4, shapes, hessians=False, rewrites=True) == 3 * compute


def test_only_known_quantizing_processors_count_as_leaving_weights_alone() -> None:
    from types import SimpleNamespace as Config

    quantizing = [Config(type="group", configs=[Config(type="linear_quant"), Config(type="dynamic_cache")])]
    assert not rewrites_weights(quantizing)
    assert rewrites_weights([Config(type="group", configs=[Config(type="iter_smooth"), Config(type="linear_quant")])])
    assert rewrites_weights([Config(type="some_plugin")])


def test_an_outer_piece_keeps_its_peak_across_the_inner_pieces_it_holds(monkeypatch) -> None:
    import modelslim_runners.budget as budget_module

    state = {"rss": 100, "peak": 100}
    monkeypatch.setattr(budget_module, "rss_bytes", lambda: state["rss"])
    monkeypatch.setattr(budget_module, "peak_since_reset", lambda: state["peak"])

    def reset() -> bool:
        state["peak"] = state["rss"]
        return True

    monkeypatch.setattr(budget_module, "reset_peak_rss", reset)

    def use(rss: int) -> None:
        state["rss"] = rss
        state["peak"] = max(state["peak"], rss)

    budget = MemoryBudget(limit=None, baseline=100, assumptions="test")
    budget.enter("model.layers.1.trunk", 50)
    use(180)  # the trunk's calibration forward
    use(140)  # the trunk stays, its temporaries go
    budget.enter("model.layers.1.experts.0-7", 30)
    use(165)
    use(140)
    budget.leave("routed experts (group)", 30)
    budget.leave("trunk", 50)
    assert budget.figures["routed experts (group)"].measured == 25  # above the 140 held when the group started
    assert budget.figures["trunk"].measured == 80  # its own peak, not hidden by the group's reset
    assert budget.figures["trunk"].plan == 50
