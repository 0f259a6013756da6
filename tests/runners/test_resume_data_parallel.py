"""A 2-rank dp_layer_wise run killed with SIGKILL (every process) resumes to the uninterrupted checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from tests.quant_runs import checkpoint_digest
from tests.runners.test_resume import CONFIG, calib, command, run, six_layer_model  # noqa: F401  (fixtures)


def dp_command(model, out, config) -> list[str]:
    return command(model, out, config)[:-1] + ["cpu:0,1"]


def kill_whole_run_after_a_unit(args: list[str], out) -> None:
    """Start the run in its own process group and SIGKILL the launcher and both ranks at once, as a crash of
    the machine or an out-of-memory kill of the job would, right after the first unit is committed."""
    state = out / ".modelslim_resume" / "state.json"
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert state.exists(), "the run finished or failed before a unit was checkpointed"
    assert not (out / "quant_model_description.json").exists()
    assert sorted(p.name for p in (out / ".modelslim_resume").glob("unit-*-rank*.pt"))  # one shard per rank


def test_killed_two_rank_run_resumes_to_the_identical_checkpoint(six_layer_model, calib, tmp_path):  # noqa: F811
    config = tmp_path / "c.yaml"
    config.write_text(CONFIG.format(runner="dp_layer_wise", symmetric="false", dataset=calib))
    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    assert run(command(six_layer_model, reference, config)).returncode == 0  # one process: DP writes the same

    kill_whole_run_after_a_unit(dp_command(six_layer_model, resumed, config), resumed)
    shards = {p.name.split("-rank")[1] for p in (resumed / ".modelslim_resume").glob("unit-*-rank*.pt")}
    assert shards == {"0.pt", "1.pt"}
    result = run(dp_command(six_layer_model, resumed, config))
    assert result.returncode == 0, result.stderr
    assert "Starting 2 data-parallel workers" in result.stderr and "Resuming stage main at unit" in result.stderr
    assert not [p.name for p in resumed.iterdir() if p.name.startswith(".")]  # resume state and spill removed
    assert checkpoint_digest(resumed) == checkpoint_digest(reference)
