"""quant_report.json: written by every real run next to the checkpoint, before the description."""

from __future__ import annotations

import hashlib
import json
import os

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.debug import Recorder
from modelslim_runners import run_report
from tests.quant_runs import mixed_config


def test_report_fields_and_order(tiny_models, small_calib, tmp_path, cli_env, monkeypatch):
    config = tmp_path / "mixed.yaml"
    config.write_text(mixed_config(small_calib))
    out = tmp_path / "out"
    seen_at_report_time: list[bool] = []
    original = run_report.write_quant_report

    def spy(context, summaries, placement):
        seen_at_report_time.append((out / "quant_model_description.json").exists())
        return original(context, summaries, placement)

    monkeypatch.setattr("modelslim_runners.pipeline.write_quant_report", spy)
    run_quant(QuantArgs(str(tiny_models("qwen2")), str(out), "Qwen2-demo", config_path=str(config), device="cpu"))
    assert seen_at_report_time == [False], "the report is written before the description marks completeness"
    report = json.loads((out / "quant_report.json").read_text())
    description = json.loads((out / "quant_model_description.json").read_text())

    assert report["format"] == "modelslim.quant_report/1"
    assert {"python", "torch", "transformers", "modelslim-core"} <= set(report["versions"])
    exported = out / "Qwen2-demo_best_practice.yaml"
    assert report["config_digest"] == hashlib.sha256(exported.read_bytes()).hexdigest()
    assert report["model"]["model_type"] == "Qwen2-demo" and report["run"]["world_size"] == 1
    [stage] = report["stages"]
    assert [u["name"] for u in stage["units"]] == ["model.layers.0", "model.layers.1"]
    assert all(u["seconds"] >= 0 and u["rss_bytes"] > 0 for u in stage["units"])
    quantized = {k.removesuffix(".weight") for k, v in description.items()
                 if k.endswith("proj.weight") and v != "FLOAT"}
    assert set(report["layers"]) == quantized
    attn = report["layers"]["model.layers.0.self_attn.q_proj"]
    assert attn["type"] == "W8A8" and 0 < attn["weight_rel_error"] < 0.05
    assert report["calib_tokens"]["model.layers.0.self_attn.q_proj"] > 0
    assert "act_scale" in attn and "act_offset" in attn
    down = report["layers"]["model.layers.1.mlp.down_proj"]
    assert down["type"] == "W8A16" and "model.layers.1.mlp.down_proj" not in report["calib_tokens"]  # data-free
    summary = report["layer_error"]
    assert summary["count"] == len(quantized)
    assert summary["max_weight_rel_error"] == max(v["weight_rel_error"] for v in report["layers"].values())
    assert summary["by_type"] == {"W8A8": 8, "W8A8_DYNAMIC": 4, "W8A16": 2}


def test_report_includes_processor_sections_such_as_expert_coverage(tiny_models, tmp_path):
    from modelslim_core.models.resolve import create_adapter
    from modelslim_core.runtime.context import DeviceSpec, RunContext
    import torch

    adapter = create_adapter("Qwen2-demo", tiny_models("qwen2"), False)
    recorder = Recorder()
    recorder.stat("expert_coverage", "model.layers.0.mlp.experts.3", 17, combine="sum")
    context = RunContext(adapter, tiny_models("qwen2"), tmp_path, DeviceSpec("cpu"), torch.float32, recorder=recorder)
    report = run_report.build_report(context, [], "LayerWisePlacement")
    assert report["expert_coverage"] == {"model.layers.0.mlp.experts.3": 17}
    assert report["layer_error"] == {"count": 0}
