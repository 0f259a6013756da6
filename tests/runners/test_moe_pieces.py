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


@pytest.mark.parametrize(("arch", "model_type", "process"),
                         [("deepseek_v3", "DeepSeek-V3", process) for process in PROCESSES]
                         + [("qwen3_moe", "Qwen3-30B-A3B", "static_everywhere")])
def test_pieces_write_the_whole_layer_checkpoint(arch, model_type, process, tiny_models, calib, tmp_path, cli_env,
                                                 monkeypatch):
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


# --- kill -9 inside a unit processed in pieces ---------------------------------------------------------------
#: Runs the CLI; after the Nth piece checkpoint, the next saving of the piece runner `RUN` (module.class) is cut
#: by SIGKILL after its first save piece (so a partly written group or layer sits in the shard files when it dies).
KILLER_TEMPLATE = """
import os, signal, sys
from modelslim_runners import MODULE, resume
kill_after = int(sys.argv[1])
checkpoints = 0
original_save = resume.ResumeStore.save
def save(self, point):
    global checkpoints
    original_save(self, point)
    checkpoints += point.piece is not None
resume.ResumeStore.save = save
original_pieces = MODULE.RUN._save
def save_pieces(self, pieces):
    if checkpoints >= kill_after and pieces:
        original_pieces(self, pieces[:1])
        os.kill(os.getpid(), signal.SIGKILL)
    original_pieces(self, pieces)
MODULE.RUN._save = save_pieces
from modelslim.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def killer(module: str, run: str) -> str:
    """The kill script for the piece runner `modelslim_runners.<module>.<run>`."""
    return KILLER_TEMPLATE.replace("MODULE", module).replace("RUN", run)


KILLER = killer("moe_pieces", "MoEPieceRun")


def cli(model: Path, out: Path, config: Path) -> list[str]:
    return ["quant", "--model_path", str(model), "--save_path", str(out), "--model_type", "DeepSeek-V3",
            "--config_path", str(config), "--device", "cpu"]


@pytest.mark.parametrize(("process", "kill_after"), [("static_everywhere", 2),
                                                    pytest.param("gptq", 4, marks=pytest.mark.slow)])
def test_a_run_killed_between_pieces_resumes_to_the_same_checkpoint(process, kill_after, tiny_models, calib, tmp_path):
    import os
    import subprocess
    import sys

    model = tiny_models("deepseek_v3")
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(process=PROCESSES[process], dataset=calib))
    env = {**os.environ, "MSMODELSLIM_EXPERTS_PER_PIECE": "1", "MSMODELSLIM_LOG_LEVEL": "info",
           "OMP_NUM_THREADS": "1"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600,
                              stdin=subprocess.DEVNULL)

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    done = run("-m", "modelslim.cli.main", *cli(model, reference, config))
    assert done.returncode == 0, done.stderr
    killed = run("-c", KILLER, str(kill_after), *cli(model, resumed, config))
    assert killed.returncode == -9, killed.stderr
    state = json.loads((resumed / ".modelslim_resume" / "state.json").read_text())
    assert "-piece" in state["payload"]  # the run died inside a unit, after a group checkpoint
    assert not (resumed / "quant_model_description.json").exists()
    again = run("-m", "modelslim.cli.main", *cli(model, resumed, config))
    assert again.returncode == 0, again.stderr
    assert "resuming at routed expert" in again.stderr
    assert checkpoint_digest(resumed) == checkpoint_digest(reference)
    assert not (resumed / ".modelslim_resume").exists()
    report = [json.loads((out / "quant_report.json").read_text()) for out in (reference, resumed)]
    assert report[0]["layers"] == report[1]["layers"]


def test_recorded_expert_rows_add_up_to_the_whole_layer_sum() -> None:
    """Split across ranks, each owner records the rows its experts add and adds them later to the running sums
    passed along: the sum must be bit for bit the one `PerExpertMoE.forward` makes in one go."""
    from modelslim_core.models.moe import ExpertMLP
    from modelslim_runners.moe_pieces import _AddedRows

    torch.manual_seed(0)
    moe = PerExpertMoE([ExpertMLP(torch.nn.Linear(8, 16), torch.nn.Linear(8, 16), torch.nn.Linear(16, 8),
                                  torch.nn.functional.silu) for _ in range(4)])
    hidden = torch.randn(10, 8)
    index = torch.stack([torch.randperm(4)[:2] for _ in range(10)])  # top-2 of 4 experts per token
    weights = torch.rand(10, 2)
    with torch.no_grad():
        expected = moe(hidden, index, weights)
        total = torch.zeros_like(hidden)
        for group in (range(0, 1), range(1, 3), range(3, 4)):  # groups owned by different ranks, in order
            rows = _AddedRows(hidden.dtype)
            moe.add_expert_outputs(rows, hidden, index, weights, group, all_tokens=False)
            rows.add_to(total)
    assert torch.equal(total, expected)
    assert moe.routed_tokens == [2 * int((index == e).sum()) for e in range(4)]  # forward, then the groups
