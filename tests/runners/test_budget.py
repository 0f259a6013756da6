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
import torch

from modelslim_runners.budget import (GPTQ_WORKING_HESSIANS, PIECE_SLACK, STREAM_BLOCKS, MemoryBudget,
                                      calibrated_weights_need, kind_of, linear_code_bytes, rewrites_weights,
                                      streamed_piece_need)

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


def test_an_outer_piece_is_measured_on_its_own_around_the_inner_pieces_it_holds(monkeypatch) -> None:
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
    use(195)
    use(140)
    budget.leave("routed experts (group)", 30)
    use(170)  # the trunk's last replay
    use(130)
    budget.leave("trunk", 50)
    assert budget.figures["routed experts (group)"].measured == 55  # above the 140 held when the group started
    # the trunk's own peak, not hidden by the group's reset nor raised by the group's own peak
    assert budget.figures["trunk"].measured == 80
    assert budget.figures["trunk"].plan == 50


def _streamed(rows: int, columns: int):
    from torch import nn

    from modelslim_core.runtime.unit import Unit
    from modelslim_runners.pieces import linear_pieces

    module = nn.Module()
    module.proj = nn.Linear(columns, rows, bias=False, device="meta", dtype=torch.bfloat16)
    return next(piece for piece in linear_pieces(Unit("layer", module, 0)) if piece.subtrees)


def test_streamed_plan_by_hand() -> None:
    mib = 2**20
    # 4096x1024 bf16: 8 MiB, 16 MiB in float32 = 2 row blocks of 8 MiB -> 2 + 3 blocks planned
    piece = _streamed(4096, 1024)
    assert streamed_piece_need(piece, 2, 1.0) == 8 * mib + 4 * mib + 5 * 8 * mib + PIECE_SLACK
    assert streamed_piece_need(piece, 2, 1.5) == 8 * mib + 6 * mib + 5 * 8 * mib + PIECE_SLACK
    assert streamed_piece_need(piece, 2, None) == 8 * mib + PIECE_SLACK  # excluded: loaded and saved as it is
    # 64x1024: its whole float32 copy (256 KiB) is the block, 1 + 3 of them
    assert streamed_piece_need(_streamed(64, 1024), 2, 1.0) == 128 * 1024 + 64 * 1024 + 4 * 256 * 1024 + PIECE_SLACK
    # 29568x8192: 29 blocks, at most STREAM_BLOCKS planned
    assert (streamed_piece_need(_streamed(29568, 8192), 2, 1.0)
            == 29568 * 8192 * 3 + STREAM_BLOCKS * 8 * mib + PIECE_SLACK)


def test_streamed_code_bytes_follow_the_processor_that_selects_a_linear() -> None:
    import yaml

    from modelslim_core.protocol.spec import parse_processor_list
    from tools.bench_scale import PROCESSES

    configs = parse_processor_list(yaml.safe_load(PROCESSES["w4a8_per_channel"][1]), "spec.process")
    code_bytes = linear_code_bytes(configs, None)
    assert code_bytes("model.layers.1.self_attn.o_proj") == 1.0
    assert code_bytes("model.layers.1.mlp.experts.3.up_proj") == 1.5
    assert code_bytes("model.layers.1.self_attn.kv_b_proj") is None
