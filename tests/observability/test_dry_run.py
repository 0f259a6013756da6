"""--dry-run: prints the plan from config and skeleton, loads no weights, writes nothing."""

from __future__ import annotations

import json

import pytest

from modelslim.cli.main import main
from modelslim_core.models import base as adapter_base
from tests.cli._helpers import tree_digest
from tests.quant_runs import STATIC_ACT, WEIGHT_SYM

def config_text(runner: str, dataset) -> str:
    return f"""\
apiversion: modelslim_v1
spec:
  dataset: {dataset}
  runner: {runner}
  save: [{{type: ascendv1_saver, part_file_size: 0}}]
  process:
    - type: group
      configs:
        - {{type: linear_quant, qconfig: {{act: {STATIC_ACT}, weight: {WEIGHT_SYM}}},
            include: ["*self_attn*"], exclude: ["*o_proj", "*no_such_layer*"]}}
        - type: linear_quant
          qconfig:
            weight: {WEIGHT_SYM}
          include: ["*mlp*", "*typo_proj"]
"""


def test_dry_run_prints_the_plan_and_writes_nothing(tiny_models, small_calib, tmp_path, capsys, cli_env, monkeypatch):
    model = tiny_models("qwen2")
    config = tmp_path / "c.yaml"
    config.write_text(config_text("layer_wise", small_calib))
    out = tmp_path / "out"
    before = tree_digest(model)

    def no_weights(*_args, **_kwargs):
        raise AssertionError("a dry run must not load weights")

    monkeypatch.setattr(adapter_base.ModelAdapter, "load_model", no_weights)
    args = ["quant", "--model_path", str(model), "--save_path", str(out), "--model_type", "Qwen2-demo",
            "--config_path", str(config), "--device", "cpu", "--dry-run"]
    capsys.readouterr()
    assert main(args) == 0
    plan = capsys.readouterr().out
    assert not out.exists(), "a dry run writes nothing"
    assert tree_digest(model) == before
    monkeypatch.undo()

    assert "Runner: layer_wise (set in spec.runner)" in plan
    assert "model.layers.0.self_attn.q_proj [64, 64]: W8A8 (spec.process[0].configs[0])" in plan
    assert "model.layers.1.self_attn.o_proj [64, 64]: FLOAT (excluded by '*o_proj' (spec.process[0].configs[0].exclude))" in plan
    assert "model.layers.1.mlp.down_proj [64, 128]: W8A16 (spec.process[0].configs[1])" in plan
    assert "lm_head [" in plan and "outside the decoder units" in plan
    assert "spec.process[0].configs[0]: '*no_such_layer*'" in plan and "spec.process[0].configs[1]: '*typo_proj'" in plan
    assert "Layer types: FLOAT x2, W8A16 x6, W8A8 x6" in plan
    assert "Calibration: " in plan and " tokens" in plan
    assert "Memory plan: 2 units, largest model.layers.0" in plan and "3 x largest unit" in plan and "upper bound" in plan

    # the real run: the digest the plan announced, and a checkpoint of about the announced size
    assert main(args[:-1]) == 0
    report = json.loads((out / "quant_report.json").read_text())
    assert f"digest sha256:{report['config_digest']}" in plan
    expected = int(plan.split("GiB (")[1].split(" bytes")[0])
    actual = (out / "quant_model_weights.safetensors").stat().st_size
    assert 0.7 < expected / actual < 1.3, (expected, actual)


def test_auto_runner_reason_and_validation_errors_surface(tiny_models, small_calib, tmp_path, capsys, cli_env):
    model = tiny_models("qwen2")
    config = tmp_path / "c.yaml"
    config.write_text(config_text("auto", small_calib))
    args = ["quant", "--model_path", str(model), "--save_path", str(tmp_path / "out"), "--model_type", "Qwen2-demo",
            "--config_path", str(config), "--device", "cpu", "--dry-run"]
    capsys.readouterr()
    assert main(args) == 0
    assert "Runner: model_wise (model needs" in capsys.readouterr().out

    config.write_text(config_text("auto", small_calib).replace(
        f"weight: {WEIGHT_SYM}\n          include: [\"*mlp*\"",
        "weight: {scope: per_group, dtype: int8, symmetric: true, method: minmax, ext: {group_size: 48}}\n"
        "          include: [\"*mlp*\""))
    assert "group_size: 48" in config.read_text()
    # (per-group weights: MindIE LLM is the target; vLLM-Ascend would refuse them first)
    assert main([*args, "--tag", "MindIE"]) == 1  # 64 input columns do not split into groups of 48, before any work
    assert "cannot be quantized" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
