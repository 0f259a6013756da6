"""A rotated run interrupted after a layer resumes to the checkpoint an uninterrupted run writes (the online
rotations of the layers finished before the interruption are kept)."""

from __future__ import annotations

import hashlib

import pytest

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_save_ascend.ascendv1 import AscendV1Saver
from tests.quant_runs import ONLINE_ROTATIONS_TARGET

CONFIG = """\
apiversion: modelslim_v1
spec:
  runner: layer_wise
  process:
    - {{type: quarot, online: true, max_tp_size: 2, down_proj_online_layers: [0, 1]}}
    - type: linear_quant
      qconfig:
        act: {{scope: per_tensor, dtype: int8, symmetric: false, method: minmax}}
        weight: {{scope: per_channel, dtype: int8, symmetric: true, method: minmax}}
      include: ["model.layers.*"]
  save: [{{type: ascendv1_saver, part_file_size: 0.0001}}]
  dataset: {dataset}
"""


def digest(out):
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "quant_report.json"}  # it holds timings


def test_interrupted_rotation_resumes_to_the_same_checkpoint(tiny_models, small_calib, tmp_path, cli_env, monkeypatch,
                                                            caplog):
    model = tiny_models("qwen2")
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(dataset=small_calib))
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    run_quant(QuantArgs(str(model), str(reference), "Qwen2-demo", config_path=str(config), device="cpu", tags=ONLINE_ROTATIONS_TARGET))

    original = AscendV1Saver.save_unit

    def crash_on_second_layer(self, unit):
        if unit.index == 1:
            raise KeyboardInterrupt
        original(self, unit)

    monkeypatch.setattr(AscendV1Saver, "save_unit", crash_on_second_layer)
    with pytest.raises(KeyboardInterrupt):
        run_quant(QuantArgs(str(model), str(resumed), "Qwen2-demo", config_path=str(config), device="cpu", tags=ONLINE_ROTATIONS_TARGET))
    monkeypatch.setattr(AscendV1Saver, "save_unit", original)
    with caplog.at_level("INFO"):
        run_quant(QuantArgs(str(model), str(resumed), "Qwen2-demo", config_path=str(config), device="cpu", tags=ONLINE_ROTATIONS_TARGET))
    assert "Resuming stage main at unit 1" in caplog.text
    assert digest(resumed) == digest(reference)
    assert "optional/quarot.safetensors" in digest(reference)
