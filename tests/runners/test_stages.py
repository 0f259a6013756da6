"""Stages and the unit pipeline: prior stages with their own data, data-free runs, forwards only when needed."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_runners.pipeline import UnitPipeline

STATIC = "{act: {scope: per_tensor, dtype: int8, symmetric: true, method: minmax}, weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}}"
DYNAMIC = "{act: {scope: per_token, dtype: int8, symmetric: true, method: minmax}, weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}}"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def forward_calls(monkeypatch) -> list[str]:
    """The names of the units the pipeline runs forward (whole, or until the running processor has recorded
    everything, as on the last unit), in order."""
    calls: list[str] = []
    whole, partial = UnitPipeline._forward, UnitPipeline._forward_until

    def counting(self, unit, inputs):
        calls.append(unit.name)
        return whole(self, unit, inputs)

    def counting_partial(self, unit, inputs, modules):
        calls.append(unit.name)
        return partial(self, unit, inputs, modules)

    monkeypatch.setattr(UnitPipeline, "_forward", counting)
    monkeypatch.setattr(UnitPipeline, "_forward_until", counting_partial)
    return calls


def test_prior_stage_calibrates_on_its_own_dataset(tiny_models, small_calib, tmp_path, caplog):
    prior_data = write(tmp_path, "prior.jsonl", '{"inputs_pretokenized": "A different calibration text."}\n')
    config = write(tmp_path, "c.yaml", f"""\
apiversion: modelslim_v1
spec:
  runner: layer_wise
  prior:
    - process: [{{type: linear_quant, qconfig: {STATIC}, include: ["*q_proj"]}}]
      dataset: {prior_data}
  process:
    - {{type: linear_quant, qconfig: {DYNAMIC}}}
  save: [{{type: ascendv1_saver, part_file_size: 0}}]
  dataset: {small_calib}
""")
    caplog.set_level(logging.INFO)
    out = tmp_path / "out"
    run_quant(QuantArgs(str(tiny_models("qwen2")), str(out), "Qwen2-demo", config_path=str(config)))
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Calibration dataset")]
    assert any(str(prior_data) in m and "1 samples" in m for m in loaded)
    assert not any(str(small_calib) in m for m in loaded)  # the main stage is data-free: its dataset is not even read
    description = json.loads((out / "quant_model_description.json").read_text())
    # stages share results through the run context, not weights: the main stage starts from the float model
    assert description["model.layers.0.self_attn.q_proj.weight"] == "W8A8_DYNAMIC"
    assert any("Stage prior[0]: 2 units" in r.getMessage() for r in caplog.records)


def test_forward_runs_once_per_unit_and_processor_that_needs_it(tiny_models, small_calib, tmp_path, forward_calls):
    calls = forward_calls
    config = write(tmp_path, "g.yaml", f"""\
apiversion: modelslim_v1
spec:
  runner: model_wise
  process:
    - type: group
      configs:
        - {{type: linear_quant, qconfig: {STATIC}, include: ["*self_attn*"]}}
        - {{type: linear_quant, qconfig: {DYNAMIC}, include: ["*mlp*"]}}
  save: [{{type: ascendv1_saver, part_file_size: 0}}]
  dataset: {small_calib}
""")
    run_quant(QuantArgs(str(tiny_models("qwen2")), str(tmp_path / "out"), "Qwen2-demo", config_path=str(config)))
    assert calls == ["model.layers.0", "model.layers.1"]  # one shared forward per unit for the whole group

    calls.clear()
    data_free = write(tmp_path, "d.yaml", f"""\
apiversion: modelslim_v1
spec:
  process: [{{type: linear_quant, qconfig: {DYNAMIC}}}]
  save: [{{type: ascendv1_saver, part_file_size: 0}}]
  dataset: does_not_exist.jsonl
""")
    run_quant(QuantArgs(str(tiny_models("qwen2")), str(tmp_path / "out2"), "Qwen2-demo", config_path=str(data_free)))
    assert calls == []  # data-free: no forward, and the (missing) dataset is never opened


def test_layer_wise_reads_each_unit_lazily_and_releases_it(tiny_models, small_calib, tmp_path, monkeypatch):
    seen: list[torch.device] = []
    from modelslim_runners import placement

    original = placement.LayerWisePlacement.leave

    def spy(self, unit):
        assert self.lazy is not None  # the model was built without weights
        original(self, unit)
        seen.append(next(unit.module.buffers(), next(unit.module.parameters())).device)

    monkeypatch.setattr(placement.LayerWisePlacement, "leave", spy)
    config = write(tmp_path, "l.yaml", f"""\
apiversion: modelslim_v1
spec:
  runner: layer_wise
  process: [{{type: linear_quant, qconfig: {STATIC}}}]
  save: [{{type: ascendv1_saver, part_file_size: 0}}]
  dataset: {small_calib}
""")
    run_quant(QuantArgs(str(tiny_models("qwen2")), str(tmp_path / "out"), "Qwen2-demo", config_path=str(config)))
    assert seen and all(device.type == "meta" for device in seen)


def test_gptq_reruns_the_unit_so_the_next_one_calibrates_on_quantized_outputs(tiny_models, small_calib, tmp_path, forward_calls):
    calls = forward_calls
    gptq = "{act: {scope: per_token, dtype: int8, symmetric: true, method: minmax}, weight: {scope: per_channel, dtype: int8, symmetric: true, method: gptq}}"
    config = write(tmp_path, "gptq.yaml", f"""\
apiversion: modelslim_v1
spec:
  runner: layer_wise
  process:
    - {{type: linear_quant, qconfig: {gptq}, include: ["*mlp*"]}}
  save: [{{type: ascendv1_saver, part_file_size: 0}}]
  dataset: {small_calib}
""")
    run_quant(QuantArgs(str(tiny_models("qwen2")), str(tmp_path / "out"), "Qwen2-demo", config_path=str(config)))
    # calibration forward (Hessians, float weights), then a rerun with the int8 weights; the last unit needs no rerun
    assert calls == ["model.layers.0", "model.layers.0", "model.layers.1"]
