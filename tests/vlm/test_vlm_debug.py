"""`--debug` for VLM runs: the VLM service builds its run context with the shared builder, so the recorder
writes debug_info/ and quant_report.json carries the config digest, as in modelslim_v1 runs."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.debug import load_debug_info
from tests.vlm._helpers import MODEL_TYPES, practice_config


def test_vlm_debug_run_records_every_quantized_linear(tiny_vlms, media_index: Path, tmp_path: Path, cli_env):
    config = practice_config("qwen3_vl", media_index)
    path = tmp_path / "practice.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    out = tmp_path / "out"
    run_quant(QuantArgs(str(tiny_vlms("qwen3_vl")), str(out), MODEL_TYPES["qwen3_vl"], config_path=str(path),
                        device="cpu", debug=True))
    records = load_debug_info(out)["linear_quant"]
    description = json.loads((out / "quant_model_description.json").read_text())
    quantized = {name.removesuffix(".weight") for name, tag in description.items()
                 if name.endswith(".weight") and tag not in ("FLOAT",) and "layers" in name}
    assert quantized
    summaries = {key.removesuffix(".summary") for key in records if key.endswith(".summary")}
    assert len(summaries) == len(quantized)
    report = json.loads((out / "quant_report.json").read_text())
    assert any(value for key, value in report.items() if "digest" in key)
