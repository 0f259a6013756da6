"""A run killed with SIGKILL resumes after its last finished unit and writes the same checkpoint."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tiny_models import make_tiny_model

CONFIG = """\
apiversion: modelslim_v1
spec:
  runner: {runner}
  process:
    - type: linear_quant
      qconfig:
        act: {{scope: per_tensor, dtype: int8, symmetric: {symmetric}, method: minmax}}
        weight: {{scope: per_channel, dtype: int8, symmetric: true, method: minmax}}
  save: [{{type: ascendv1_saver, part_file_size: 0.0003}}]
  dataset: {dataset}
"""


@pytest.fixture(scope="module")
def six_layer_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("six"), "qwen2", num_hidden_layers=6, hidden_size=128,
                           intermediate_size=384)


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "calib.jsonl"
    text = "Resumable quantization keeps every finished layer. " * 30
    path.write_text("\n".join(json.dumps({"text": f"{i}: {text}"}) for i in range(24)) + "\n")
    return path


def command(model: Path, out: Path, config: Path) -> list[str]:
    return [sys.executable, "-m", "modelslim.cli.main", "quant", "--model_path", str(model), "--save_path", str(out),
            "--model_type", "Qwen2-demo", "--config_path", str(config), "--device", "cpu"]


def digest(out: Path) -> dict[str, str]:
    # quant_report.json holds timings, so it differs between any two runs
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.iterdir())
            if p.is_file() and p.name != "quant_report.json"}


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600,
                          env={**os.environ, "MSMODELSLIM_LOG_LEVEL": "info"})


def kill_after_first_unit(args: list[str], out: Path) -> None:
    state = out / ".modelslim_resume" / "state.json"
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state.exists(), "the run finished or failed before a unit was checkpointed"
    assert not (out / "quant_model_description.json").exists()  # killed output never looks complete


@pytest.mark.parametrize("runner", ["layer_wise", "model_wise"])
def test_killed_run_resumes_to_the_identical_checkpoint(runner, six_layer_model, calib, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(runner=runner, symmetric="false", dataset=calib))
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert run(command(six_layer_model, reference, config)).returncode == 0

    kill_after_first_unit(command(six_layer_model, resumed, config), resumed)
    result = run(command(six_layer_model, resumed, config))
    assert result.returncode == 0, result.stderr
    assert "Resuming stage main at unit" in result.stderr
    assert not (resumed / ".modelslim_resume").exists()
    assert digest(resumed) == digest(reference)
    assert len([n for n in digest(reference) if n.startswith("quant_model_weights-")]) >= 2
    # the report covers the units finished before the kill too (the recorder travels in the resume state)
    layers = [json.loads((out / "quant_report.json").read_text())["layers"] for out in (reference, resumed)]
    assert layers[0] == layers[1] and len(layers[0]) == 6 * 7


def test_a_changed_config_does_not_resume(six_layer_model, calib, tmp_path):
    first, second = tmp_path / "first.yaml", tmp_path / "second.yaml"
    first.write_text(CONFIG.format(runner="layer_wise", symmetric="false", dataset=calib))
    second.write_text(CONFIG.format(runner="layer_wise", symmetric="true", dataset=calib))
    out, reference = tmp_path / "out", tmp_path / "reference"
    kill_after_first_unit(command(six_layer_model, out, first), out)
    result = run(command(six_layer_model, out, second))
    assert result.returncode == 0, result.stderr
    assert "different config, model or version" in result.stderr and "Resuming" not in result.stderr
    assert run(command(six_layer_model, reference, second)).returncode == 0
    assert digest(out) == digest(reference)
