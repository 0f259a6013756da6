"""Calibrated MoE layers processed in pieces (trunk, then groups of routed experts fed their captured inputs)
write the checkpoint a whole-layer run writes, byte for byte, with at most one group of experts in memory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.models.moe import PerExpertMoE
from modelslim_core.runtime.unit import Unit
from modelslim_runners.moe_pieces import expert_of, routed_experts, save_plan
from modelslim_runners.pipeline import UnitPipeline
from modelslim_runners.placement import LayerWisePlacement
from tests.quant_runs import checkpoint_digest

STATIC = "{scope: per_tensor, dtype: int8, symmetric: false, method: minmax}"
DYNAMIC = "{scope: per_token, dtype: int8, symmetric: true, method: minmax}"
INT8_WEIGHT = "{scope: per_channel, dtype: int8, symmetric: true, method: minmax}"
GPTQ_WEIGHT = "{scope: per_channel, dtype: int8, symmetric: true, method: gptq}"

#: process lists: the DeepSeek practice's shape (static attention, dynamic MLP in one group), static
#: everywhere (experts calibrated, every token through every expert), smoothing + static, and GPTQ (stale).
PROCESSES = {
    "practice_group": f"""
    - type: group
      configs:
        - {{type: linear_quant, qconfig: {{act: {STATIC}, weight: {INT8_WEIGHT}}}, include: ["*self_attn*"], exclude: ["*kv_b_proj"]}}
        - {{type: linear_quant, qconfig: {{act: {DYNAMIC}, weight: {INT8_WEIGHT}}}, include: ["*mlp.*"]}}""",
    "static_everywhere": f"""
    - {{type: linear_quant, qconfig: {{act: {STATIC}, weight: {INT8_WEIGHT}}}, exclude: ["*kv_b_proj"]}}""",
    "smooth_then_static": f"""
    - {{type: iter_smooth, alpha: 0.5}}
    - {{type: linear_quant, qconfig: {{act: {STATIC}, weight: {INT8_WEIGHT}}}, exclude: ["*kv_b_proj"]}}""",
    "gptq": f"""
    - {{type: linear_quant, qconfig: {{act: {DYNAMIC}, weight: {GPTQ_WEIGHT}}}, exclude: ["*kv_b_proj"]}}""",
}

CONFIG = """\
apiversion: modelslim_v1
spec:
  runner: layer_wise
  process:{process}
  save: [{{type: ascendv1_saver, part_file_size: 0.0002}}]
  dataset: {dataset}
"""


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.jsonl"
    texts = [f"Sample {i}: experts see only the tokens routed to them, {'and more words ' * (i % 4)}done." for i in range(6)]
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def quantize(model: Path, model_type: str, process: str, calib: Path, out: Path) -> dict[str, str]:
    config = out.parent / f"{out.name}.yaml"
    config.write_text(CONFIG.format(process=process, dataset=calib))
    run_quant(QuantArgs(str(model), str(out), model_type, config_path=str(config), device="cpu"))
    return checkpoint_digest(out)


class PieceWatch:
    """Forces MoE units into pieces of `group` experts and records what is in memory at every piece entered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, group: int):
        self.entered: list[Unit] = []
        self.max_experts_loaded = 0
        self.whole_moe_units = 0
        monkeypatch.setattr(UnitPipeline, "_experts_per_group",
                            lambda pipeline, unit: group if pipeline._moe_pieces and routed_experts(unit) else None)
        original = LayerWisePlacement.enter

        def enter(placement, unit: Unit, dtype=None) -> None:
            original(placement, unit, dtype) if dtype is not None else original(placement, unit)
            self.entered.append(unit)
            found = routed_experts(unit)
            if found is None:
                return
            if unit.whole:
                self.whole_moe_units += 1
            path, moe = found
            loaded = {expert_of(name, path) for name, p in unit.module.named_parameters() if not p.is_meta}
            self.max_experts_loaded = max(self.max_experts_loaded, len(loaded - {None}))

        monkeypatch.setattr(LayerWisePlacement, "enter", enter)


@pytest.mark.parametrize("process", list(PROCESSES))
@pytest.mark.parametrize(("arch", "model_type"), [("deepseek_v3", "DeepSeek-V3"), ("qwen3_moe", "Qwen3-30B-A3B")])
def test_pieces_write_the_whole_layer_checkpoint(arch, model_type, process, tiny_models, calib, tmp_path, cli_env,
                                                 monkeypatch):
    if arch == "qwen3_moe" and process != "static_everywhere":
        pytest.skip("one process list is enough for the second family")
    model = tiny_models(arch)
    whole = quantize(model, model_type, PROCESSES[process], calib, tmp_path / "whole")
    watch = PieceWatch(monkeypatch, group=3)  # 4 experts: groups of 3 and 1
    pieced = quantize(model, model_type, PROCESSES[process], calib, tmp_path / "pieced")
    assert len(whole) > 3  # several shards, so the order of tensors across shard files is checked too
    assert pieced == whole
    # memory: no MoE unit was ever loaded whole, and at most one group of experts was in memory at a time
    assert any(u.label == "trunk" for u in watch.entered)
    assert watch.whole_moe_units == 0
    assert watch.max_experts_loaded == 3
    assert all(p.is_meta for u in watch.entered for p in u.module.parameters())  # every piece was released


def test_save_plan_keeps_module_order(tiny_models) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from modelslim_core.models.moe import prepare_moe_model

    config = AutoConfig.from_pretrained(tiny_models("deepseek_v3"))
    with torch.device("meta"):
        model = prepare_moe_model(AutoModelForCausalLM.from_config(config))
    layer = model.model.layers[1]
    unit = Unit("model.layers.1", layer, 1)
    path, moe = routed_experts(unit)
    assert path == "mlp.experts" and isinstance(moe, PerExpertMoE)
    plan = save_plan(unit, path)
    order = [name for name, _ in layer.named_parameters()]

    def names(pieces: list[Unit]) -> list[str]:
        return [n for n in order if any(p.covers(n.rpartition(".")[0]) for p in pieces)]

    flat = names(plan.before) + [n for e in sorted(plan.experts) for n in names(plan.experts[e])] + names(plan.after)
    assert flat == order
    assert names(plan.after)[0] == "mlp.gate.weight"  # the router and shared experts follow the routed experts
    assert sorted(plan.experts) == list(range(len(moe)))
