"""A run killed with SIGKILL resumes after its last finished unit and writes the same checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.quant_runs import checkpoint_digest
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



def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600,
                          env={**os.environ, "MSMODELSLIM_LOG_LEVEL": "info"})


@pytest.fixture(scope="module")
def reference(six_layer_model, calib, tmp_path_factory):
    """reference(runner, symmetric) -> (config, checkpoint of the uninterrupted run): each config is run once per
    module, however many kill/resume tests compare against it."""
    done: dict[tuple[str, str], tuple[Path, Path]] = {}

    def get(runner: str, symmetric: str = "false") -> tuple[Path, Path]:
        if (runner, symmetric) not in done:
            directory = tmp_path_factory.mktemp(f"reference-{runner}-{symmetric}")
            config, out = directory / "c.yaml", directory / "out"
            config.write_text(CONFIG.format(runner=runner, symmetric=symmetric, dataset=calib))
            result = run(command(six_layer_model, out, config))
            assert result.returncode == 0, result.stderr
            done[runner, symmetric] = config, out
        return done[runner, symmetric]

    return get


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
def test_killed_run_resumes_to_the_identical_checkpoint(runner, six_layer_model, reference, tmp_path):
    config, expected = reference(runner)
    resumed = tmp_path / "resumed"
    kill_after_first_unit(command(six_layer_model, resumed, config), resumed)
    result = run(command(six_layer_model, resumed, config))
    assert result.returncode == 0, result.stderr
    assert "Resuming stage main at unit" in result.stderr
    assert not (resumed / ".modelslim_resume").exists()
    assert checkpoint_digest(resumed) == checkpoint_digest(expected)
    assert len([n for n in checkpoint_digest(expected) if n.startswith("quant_model_weights-")]) >= 2
    # the report covers the units finished before the kill too (the recorder travels in the resume state)
    layers = [json.loads((out / "quant_report.json").read_text())["layers"] for out in (expected, resumed)]
    assert layers[0] == layers[1] and len(layers[0]) == 6 * 7


def test_a_changed_config_does_not_resume(six_layer_model, calib, reference, tmp_path):
    """Killed with a symmetric-activation config, rerun with the asymmetric one: a fresh run whose checkpoint is
    the asymmetric reference (the one the layer_wise kill/resume test compares to), nothing of the first run's."""
    first = tmp_path / "first.yaml"
    first.write_text(CONFIG.format(runner="layer_wise", symmetric="true", dataset=calib))
    second, expected = reference("layer_wise")
    out = tmp_path / "out"
    kill_after_first_unit(command(six_layer_model, out, first), out)
    result = run(command(six_layer_model, out, second))
    assert result.returncode == 0, result.stderr
    assert "different config, model or version" in result.stderr and "Resuming" not in result.stderr
    assert checkpoint_digest(out) == checkpoint_digest(expected)
