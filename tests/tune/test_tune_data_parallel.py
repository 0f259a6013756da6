"""`msmodelslim tune` with its rounds quantized by `dp_layer_wise` on two CPU worker processes: the same
rounds, passing config and checkpoint as the single-process tune.

The candidates are given (the analysis' own order on this model, tests/tune/test_tune.py): the analysis under
data parallelism is the same quantization as a round, and running it twice more would double this test's time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.tune._helpers import make_outlier_model, w8a8_config, write_calib

#: W8A8 with no rollback: perplexity ratio ~1.0017; with layers 2 and 0 float ~1.0000 (tests/tune/test_tune.py)
TIGHT = 1.0004
CHECKPOINT_FILES = ("quant_model_weights.safetensors", "quant_model_description.json")


def tune_cli(model: Path, config: Path, save: Path, device: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modelslim.cli.main", "tune", "--model_path", str(model), "--save_path", str(save),
         "--config", str(config), "--device", device, "--model_type", "Llama-demo"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1200,
        env={**os.environ, "MSMODELSLIM_LOG_LEVEL": "info"})


@pytest.mark.slow
def test_tune_under_dp_layer_wise_matches_the_single_process_tune(tmp_path):
    model = make_outlier_model(tmp_path / "model")
    calib = write_calib(tmp_path / "calib.jsonl")
    template = w8a8_config(calib)
    template["spec"]["runner"] = "auto"  # one device: a single process; cpu:0,1: dp_layer_wise
    document = {"strategy": {"type": "binary_fallback", "template": template, "rollback_path": "spec.process.0.exclude",
                             "rollback_candidates": ["model.layers.2.*", "model.layers.0.*"]},
                "evaluation": {"type": "perplexity", "dataset": str(calib), "max_ratio": TIGHT}}
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(document), encoding="utf-8")
    single = tune_cli(model, config, tmp_path / "single", "cpu")
    assert single.returncode == 0, single.stderr
    parallel = tune_cli(model, config, tmp_path / "parallel", "cpu:0,1")
    assert parallel.returncode == 0, parallel.stderr
    assert "Runner auto -> dp_layer_wise" in parallel.stderr and "Starting 2 data-parallel workers" in parallel.stderr
    # the round that rolls layer 2 back takes units 0-1 from round 0's entries on both ranks (unit_cache.py)
    assert "Reused the first 2 of 4 units" in parallel.stderr
    reports = [json.loads((tmp_path / run / "tune_report.json").read_text()) for run in ("single", "parallel")]
    assert reports[0]["rolled_back"] == reports[1]["rolled_back"] == ["model.layers.2.*", "model.layers.0.*"]
    assert [(r["rolled_back"], r["passed"]) for r in reports[0]["rounds"]] == \
        [(r["rolled_back"], r["passed"]) for r in reports[1]["rounds"]]
    assert (tmp_path / "single" / "tuned_config.yaml").read_bytes() == (tmp_path / "parallel" / "tuned_config.yaml").read_bytes()
    for name in CHECKPOINT_FILES:
        assert (tmp_path / "single" / "quant_model" / name).read_bytes() == \
            (tmp_path / "parallel" / "quant_model" / name).read_bytes(), name
