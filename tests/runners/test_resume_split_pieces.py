"""Data-parallel runs whose pieces are split across the ranks, a rank killed with SIGKILL in the middle of a
layer: a data-free run (each linear quantized by one rank, split_pieces.py) and a calibrated MoE run (each group
of routed experts calibrated by one rank, moe_pieces.py) resume at the last committed piece and write the
single-process checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from modelslim.app.quick_quant import QuantArgs, run_quant

from tests.quant_runs import SMOOTHED_STATIC_MLA, checkpoint_digest
from tests.runners.test_data_parallel import quant_in_process
from tests.runners.test_resume import command, six_layer_model  # noqa: F401  (fixture)

CONFIG = """\
apiversion: modelslim_v1
spec:
  runner: dp_layer_wise
  process:
{process}
  save: [{{type: ascendv1_saver, part_file_size: 0.0003}}]
"""
DATA_FREE = """\
    - type: linear_quant
      qconfig:
        act: {scope: per_token, dtype: int8, symmetric: true, method: minmax, ext: {}}
        weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}
"""
#: A resume point after every piece: the kill lands between two pieces of a layer.
EVERY_PIECE = {"MSMODELSLIM_STREAM_CHECKPOINT_BYTES": "1", "MSMODELSLIM_LOG_LEVEL": "info"}


def rank_processes(launcher: int) -> list[int]:
    """The spawned ranks of a `--device cpu:0,1` run (children of the launcher running spawn_main)."""
    listing = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(launcher)], capture_output=True, text=True)
    return [int(line.split()[0]) for line in listing.stdout.splitlines() if "spawn_main" in line]


def kill_one_rank_inside_a_layer(args: list[str], out: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """SIGKILL one rank once a resume point inside a layer (between two pieces) is committed; the launcher then
    stops the other rank and fails. Returns the launcher's result."""
    state = out / ".modelslim_resume" / "state.json"
    launcher = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True, env={**os.environ, **env}, start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while launcher.poll() is None and time.monotonic() < deadline:
            try:
                inside = "-piece" in json.loads(state.read_text())["payload"]
            except (OSError, ValueError, KeyError):
                inside = False
            ranks = rank_processes(launcher.pid)
            if inside and len(ranks) == 2:
                os.kill(max(ranks), signal.SIGKILL)
                break
            time.sleep(0.005)
        stdout, stderr = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    return subprocess.CompletedProcess(args, launcher.returncode, stdout, stderr)


@pytest.mark.slow
def test_a_rank_killed_inside_a_layer_resumes_at_the_last_piece(six_layer_model, tmp_path, cli_env):  # noqa: F811
    config = tmp_path / "dynamic.yaml"
    config.write_text(CONFIG.format(process=DATA_FREE))
    single, resumed = tmp_path / "single", tmp_path / "resumed"
    quant_in_process(six_layer_model, single, config)
    args = command(six_layer_model, resumed, config)[:-1] + ["cpu:0,1"]

    killed = kill_one_rank_inside_a_layer(args, resumed, EVERY_PIECE)
    assert killed.returncode != 0, killed.stderr
    assert "Traceback" not in killed.stderr and "worker process failed" in killed.stderr, killed.stderr
    assert not (resumed / "quant_model_description.json").exists()  # nothing that looks complete

    result = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600,
                            env={**os.environ, **EVERY_PIECE})
    assert result.returncode == 0, result.stderr
    assert "Resuming stage" in result.stderr and "resuming at piece" in result.stderr, result.stderr
    assert not [p.name for p in resumed.iterdir() if p.name.startswith(".")]  # resume state removed
    assert checkpoint_digest(resumed) == checkpoint_digest(single)


CALIBRATED = SMOOTHED_STATIC_MLA + "  dataset: {dataset}\n"
#: One routed expert per group: with two ranks a resume point after every second group, inside the layer.
EVERY_GROUP_PAIR = {"MSMODELSLIM_EXPERTS_PER_PIECE": "1", "MSMODELSLIM_LOG_LEVEL": "info"}


@pytest.mark.slow
def test_a_rank_killed_between_expert_groups_resumes_there(tiny_models, small_calib, tmp_path, cli_env):
    model = tiny_models("deepseek_v3")  # layers 1-2: 4 routed experts each, split 2 + 2 across the ranks
    config = tmp_path / "w8a8.yaml"
    config.write_text(CONFIG.format(process=CALIBRATED.replace("{dataset}", str(small_calib))))
    single, resumed = tmp_path / "single", tmp_path / "resumed"
    run_quant(QuantArgs(str(model), str(single), "DeepSeek-V3", config_path=str(config), device="cpu"))  # whole layers
    args = command(model, resumed, config)[:-1] + ["cpu:0,1"]
    args[args.index("Qwen2-demo")] = "DeepSeek-V3"

    killed = kill_one_rank_inside_a_layer(args, resumed, EVERY_GROUP_PAIR)
    assert killed.returncode != 0, killed.stderr
    assert not (resumed / "quant_model_description.json").exists()

    result = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600,
                            env={**os.environ, **EVERY_GROUP_PAIR})
    assert result.returncode == 0, result.stderr
    assert "resuming at routed expert 2 (groups of 1)" in result.stderr, result.stderr
    assert "Routed experts split across 2 ranks" in result.stderr
    assert not [p.name for p in resumed.iterdir() if p.name.startswith(".")]
    assert checkpoint_digest(resumed) == checkpoint_digest(single)
