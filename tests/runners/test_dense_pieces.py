"""Calibrated dense layers processed in pieces (attention block, then MLP fed the attention's recorded outputs)
write the checkpoint a whole-layer run writes, byte for byte, for the shipped practices, with one piece's linears
in memory at a time; a run killed between the pieces resumes to the same checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.runtime.unit import Unit
from modelslim_runners.dense_pieces import dense_split, save_order
from modelslim_runners.placement import LayerWisePlacement
from tests.quant_runs import checkpoint_digest
from tests.runners.test_moe_pieces import calib, killer  # noqa: F401  (calib: the shared fixture)

REPO = Path(__file__).resolve().parents[2]
#: The shipped practices (process lists as shipped; runner layer_wise, small shards, the test's dataset).
PRACTICES = {
    "w8a8": "practices/qwen2_5/qwen2.5-w8a8.yaml",
    "w8a8c8": "practices/qwen2_5/qwen2.5-w8a8c8.yaml",
    "w4a8": "practices/qwen2_5/qwen2.5-w4a8.yaml",
    "w4a16_gptq": "practices/default/default-w4a16.yaml",
}
#: Dense W4A8 ships as W8A8_DYNAMIC everywhere (what vLLM-Ascend serves on dense layers): data-free.
DATA_FREE = {"w4a8"}
MLP_LINEARS = ("gate_proj", "up_proj", "down_proj")
ATTENTION_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj")


def practice_config(name: str, dataset: Path, target: Path) -> Path:
    document = yaml.safe_load((REPO / PRACTICES[name]).read_text())
    spec = document["spec"]
    spec["runner"], spec["dataset"] = "layer_wise", str(dataset)
    for saver in spec["save"]:
        saver["part_file_size"] = 0.0002  # several shards: the order of tensors across files is checked too
    target.write_text(yaml.safe_dump(document))
    return target


def quantize(model: Path, config: Path, out: Path) -> dict[str, str]:
    run_quant(QuantArgs(str(model), str(out), "Qwen2.5-7B-Instruct", config_path=str(config), device="cpu"))
    return checkpoint_digest(out)


class PieceWatch:
    """Records every piece entered and the most linears of the layer ever held at once."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.labels: list[str] = []
        self.whole_units = 0
        self.attention_and_mlp_together = False
        original = LayerWisePlacement.enter

        def enter(placement, unit: Unit, dtype=None) -> None:
            original(placement, unit, dtype) if dtype is not None else original(placement, unit)
            self.labels.append(unit.label)
            self.whole_units += unit.whole
            loaded = {name.split(".")[1] for name, p in unit.module.named_parameters() if not p.is_meta
                      and name.endswith("weight") and name.split(".")[1] in (*MLP_LINEARS, *ATTENTION_LINEARS)}
            self.attention_and_mlp_together |= bool(loaded & set(MLP_LINEARS)) and bool(loaded & set(ATTENTION_LINEARS))

        monkeypatch.setattr(LayerWisePlacement, "enter", enter)


@pytest.mark.parametrize("practice", list(PRACTICES))
def test_dense_pieces_write_the_whole_layer_checkpoint(practice, tiny_models, calib, tmp_path, cli_env, monkeypatch):
    model = tiny_models("qwen2")
    config = practice_config(practice, calib, tmp_path / "c.yaml")
    whole = quantize(model, config, tmp_path / "whole")
    watch = PieceWatch(monkeypatch)
    monkeypatch.setenv("MSMODELSLIM_DENSE_PIECES", "1")
    pieced = quantize(model, config, tmp_path / "pieced")
    assert len(whole) > 3
    assert pieced == whole
    assert watch.whole_units == 0
    if practice in DATA_FREE:  # streamed linear by linear (pieces.py) whether or not dense pieces are asked for
        assert watch.labels.count("self_attn.q_proj") == 2 and "attention" not in watch.labels
        return
    assert watch.labels.count("attention") == watch.labels.count("mlp") == 2  # both layers, in pieces
    assert not watch.attention_and_mlp_together  # the attention's linears were released before the MLP came


def test_a_budget_smaller_than_a_layer_splits_it(tiny_models, calib, tmp_path, cli_env, monkeypatch, caplog):
    """Without the switch, the budget decides: the plan's largest piece is then a piece, not the layer."""
    from modelslim_runners import pipeline as pipeline_module

    model = tiny_models("qwen2")
    config = practice_config("w8a8", calib, tmp_path / "c.yaml")
    monkeypatch.setattr(pipeline_module.UnitPipeline, "_unit_need", lambda self, unit, activations: 1 << 50)
    watch = PieceWatch(monkeypatch)
    with caplog.at_level("INFO"):
        run_quant(QuantArgs(str(model), str(tmp_path / "out"), "Qwen2.5-7B-Instruct", config_path=str(config),
                            device="cpu", max_memory=64 << 30))
    assert watch.labels.count("mlp") == 2
    assert "is processed in pieces: its attention block, then its MLP" in caplog.text
    plan = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Memory plan ("))
    assert "largest piece model.layers." in plan and (".mlp needs" in plan or ".attention needs" in plan)


def test_the_cut_keeps_every_smoothing_subgraph_in_one_piece_and_the_save_order(tiny_models) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from modelslim_core.models.subgraphs import DENSE_DECODER_SUBGRAPHS, resolve_subgraphs

    config = AutoConfig.from_pretrained(tiny_models("qwen2"))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    layer = model.model.layers[0]
    unit = Unit("model.layers.0", layer, 0)
    split = dense_split(unit)
    assert split is not None
    subgraphs = resolve_subgraphs(unit, DENSE_DECODER_SUBGRAPHS, (config.num_attention_heads, config.num_key_value_heads))
    assert {sg.kind for sg in subgraphs} >= {"norm-linear", "ov", "up-down"}
    for subgraph in subgraphs:
        names = (subgraph.source_name, *subgraph.target_names)
        inside = [all(piece.covers_site(n) for n in names) for piece in (split.attention, split.mlp)]
        assert inside.count(True) == 1, subgraph
    before, rest = save_order(unit, split.mlp)
    order = [name for name, _ in layer.named_parameters()]

    def names(pieces: list[Unit]) -> list[str]:
        return [n for n in order if any(p.covers(n.rpartition(".")[0]) for p in pieces)]

    assert names(before) + names(rest) == order
    assert names(before) and all(n.startswith("self_attn.") for n in names(before))


def test_layers_of_other_layouts_stay_whole(tiny_models) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    from modelslim_core.models.moe import prepare_moe_model

    config = AutoConfig.from_pretrained(tiny_models("deepseek_v3"))
    with torch.device("meta"):
        model = prepare_moe_model(AutoModelForCausalLM.from_config(config))
    assert dense_split(Unit("model.layers.0", model.model.layers[0], 0)) is not None  # its dense first layer
    assert dense_split(Unit("model.layers.1", model.model.layers[1], 1)) is None  # routed experts: moe_pieces
    lone = torch.nn.Sequential(torch.nn.Linear(4, 4))
    assert dense_split(Unit("x", lone, 0)) is None


# --- kill -9 between the attention piece and the MLP piece -------------------------------------------------
#: Once the attention piece's checkpoint is committed, the MLP piece's saving is cut by SIGKILL after its first
#: save piece (a partly written layer sits in the shard files when the run dies).
KILLER = killer("dense_pieces", "DensePieceRun")


@pytest.mark.slow
@pytest.mark.parametrize("practice", ["w8a8", "w4a16_gptq"])
def test_a_run_killed_between_dense_pieces_resumes_to_the_same_checkpoint(practice, tiny_models, calib, tmp_path):
    model = tiny_models("qwen2")
    config = practice_config(practice, calib, tmp_path / "c.yaml")
    env = {**os.environ, "MSMODELSLIM_DENSE_PIECES": "1", "MSMODELSLIM_LOG_LEVEL": "info", "OMP_NUM_THREADS": "1"}

    def cli(out: Path) -> list[str]:
        return ["quant", "--model_path", str(model), "--save_path", str(out), "--model_type", "Qwen2.5-7B-Instruct",
                "--config_path", str(config), "--device", "cpu"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600,
                              stdin=subprocess.DEVNULL)

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    done = run("-m", "modelslim.cli.main", *cli(reference))
    assert done.returncode == 0, done.stderr
    killed = run("-c", KILLER, "1", *cli(resumed))
    assert killed.returncode == -9, killed.stderr
    state = json.loads((resumed / ".modelslim_resume" / "state.json").read_text())
    assert "-piece" in state["payload"]  # the run died inside a layer, after its attention piece
    assert not (resumed / "quant_model_description.json").exists()
    again = run("-m", "modelslim.cli.main", *cli(resumed))
    assert again.returncode == 0, again.stderr
    assert "resuming at its MLP piece" in again.stderr
    assert checkpoint_digest(resumed) == checkpoint_digest(reference)
    assert not (resumed / ".modelslim_resume").exists()
