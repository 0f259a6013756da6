"""Two `torchrun --nnodes 2` launchers on one host (rendezvous on 127.0.0.1, one rank each, gloo) write the
checkpoint one process writes; each rank quantizes its share of the data-free linears (round robin) and
its share of the calibration samples. Run with --debug, the same run shows every rank's records gathered on
rank 0: debug_info and the report equal one process's."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.debug import load_debug_info
from tests.runners.test_data_parallel import W8A8_GROUP, sha, write_config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_torchrun_nodes_write_the_single_process_checkpoint(tiny_models, small_calib, tmp_path, cli_env):
    model = tiny_models("qwen2")
    config = write_config(tmp_path, "w8a8", W8A8_GROUP, small_calib, runner="dp_layer_wise")
    single, nodes = tmp_path / "single", tmp_path / "nodes"
    run_quant(QuantArgs(str(model), str(single), "Qwen2-demo", config_path=str(config), device="cpu", debug=True))
    port = free_port()
    env = {**os.environ, "MSMODELSLIM_LOG_LEVEL": "info", "OMP_NUM_THREADS": "1"}
    logs = [tmp_path / f"node{node}.log" for node in (0, 1)]
    launchers = []
    for node, log in enumerate(logs):  # files, not pipes: a full pipe would stall a rank inside a collective
        with log.open("w") as handle:
            launchers.append(subprocess.Popen(
                [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                 "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port),
                 "-m", "modelslim.cli.main", "quant", "--model_path", str(model), "--save_path", str(nodes),
                 "--model_type", "Qwen2-demo", "--config_path", str(config), "--device", "cpu", "--debug"],
                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=tmp_path,
                start_new_session=True))  # its own group: a stuck launcher is killed with its worker
    try:
        for launcher in launchers:
            launcher.wait(timeout=900)
    finally:
        for launcher in launchers:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()
    logs = [log.read_text() for log in logs]
    assert [launcher.returncode for launcher in launchers] == [0, 0], "\n\n".join(logs)
    assert "Joined process group: rank 0 of 2" in logs[0] and "Joined process group: rank 1 of 2" in logs[1]
    for name in ("quant_model_weights.safetensors", "quant_model_description.json"):
        assert sha(single / name) == sha(nodes / name), name
    assert not [p for p in nodes.iterdir() if p.name.startswith(("rank", "."))]
    # --debug: every rank's records gathered on rank 0 (formerly tests/observability/test_debug_info.py's
    # data-parallel run, which repeated this quantization with two spawned ranks)
    one, two = load_debug_info(single), load_debug_info(nodes)
    assert one.keys() == two.keys() and one["linear_quant"].keys() == two["linear_quant"].keys()
    for key, value in one["linear_quant"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, two["linear_quant"][key]), key
    report_one, report_two = (json.loads((out / "quant_report.json").read_text()) for out in (single, nodes))
    assert report_two["run"]["world_size"] == 2
    assert report_two["calib_tokens"] == report_one["calib_tokens"]  # each rank saw its share; rank 0 sums them
    assert report_two["layers"] == report_one["layers"]
