"""Two `torchrun --nnodes 2` launchers on one host (rendezvous on 127.0.0.1, one rank each, gloo) write the
checkpoint one process writes, on a tiny DeepSeek-V3 (MLA, a dense layer, routed and shared experts): in a
data-free run each rank quantizes its share of the linears (round robin); in a calibrated run each rank
calibrates its share of the samples, layer by layer in pieces, and its share of the groups of routed experts
over every sample. Run with --debug, the calibrated run shows every rank's records gathered on rank 0:
debug_info and the report equal one process's."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.debug import load_debug_info
from modelslim_core.quant.gptq import _one_intra_op_thread as one_thread  # torch on one thread inside
from tests.quant_runs import SMOOTHED_STATIC_MLA
from tests.runners.test_data_parallel import sha, write_config


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_two_torchrun_nodes(tmp_path: Path, model: Path, out: Path, config: Path, model_type: str,
                           *extra: str, env: dict[str, str] | None = None) -> tuple[list[str], list[int]]:
    """Two `torchrun --nnodes 2 --nproc_per_node 1` launchers on this host (rendezvous on 127.0.0.1) running
    `msmodelslim quant`: (each node's log, each launcher's exit code)."""
    port = free_port()
    env = {**os.environ, "MSMODELSLIM_LOG_LEVEL": "info", "OMP_NUM_THREADS": "1", **(env or {})}
    logs = [tmp_path / f"{out.name}-node{node}.log" for node in (0, 1)]
    launchers = []
    for node, log in enumerate(logs):  # files, not pipes: a full pipe would stall a rank inside a collective
        with log.open("w") as handle:
            launchers.append(subprocess.Popen(
                [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                 "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", str(port),
                 "-m", "modelslim.cli.main", "quant", "--model_path", str(model), "--save_path", str(out),
                 "--model_type", model_type, "--config_path", str(config), "--device", "cpu", *extra],
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
    return [log.read_text() for log in logs], [launcher.returncode for launcher in launchers]


CALIBRATED = SMOOTHED_STATIC_MLA
#: Every dense layer as its attention block then its MLP, every MoE layer as its trunk then one expert per group.
IN_PIECES = {"MSMODELSLIM_DENSE_PIECES": "1", "MSMODELSLIM_EXPERTS_PER_PIECE": "1"}


def same_checkpoint(single: Path, nodes: Path, logs: list[str]) -> None:
    """The nodes' checkpoint is one process's, nothing of theirs is left behind, and no node's log warns about
    experts of mixed types (a rank other than 0 holds only its own pieces: its notes are not the layer's)."""
    names = [p.name for p in single.iterdir() if p.suffix in (".safetensors", ".json") and p.name != "quant_report.json"]
    assert "quant_model_weights.safetensors" in names
    for name in names:
        assert sha(single / name) == sha(nodes / name), name
    assert not [p for p in nodes.iterdir() if p.name.startswith(("rank", "."))]
    assert not any("different quantization types" in log for log in logs)  # rank 1 holds only its own pieces


def shares(logs: list[str], pattern: str) -> tuple[int, int, int]:
    """(rank 0's count, rank 1's count, total) from each node's "rank R <pattern> N of the M" log line."""
    found = [re.search(rf"rank (\d) {pattern} (\d+) of the (\d+)", log) for log in logs]
    assert all(found), "\n\n".join(logs)
    (rank0, mine0, total), (rank1, mine1, total1) = ([int(g) for g in m.groups()] for m in found)
    assert (rank0, rank1) == (0, 1) and total == total1
    return mine0, mine1, total


@pytest.mark.slow
def test_two_torchrun_nodes_split_the_routed_experts_of_a_calibrated_run(tiny_models, small_calib, tmp_path, cli_env):
    """Smoothing + W8A8 static, the two nodes' layers in pieces, one process's whole: the trunk's statistics are
    reduced across the nodes; each group of routed experts is loaded and calibrated by one node, over every
    sample."""
    model = tiny_models("deepseek_v3")  # layer 0 dense, layers 1-2 with 4 routed experts and a shared expert
    config = write_config(tmp_path, "w8a8", CALIBRATED, small_calib, runner="dp_layer_wise")
    single, nodes = tmp_path / "single", tmp_path / "nodes"
    with one_thread():  # as the nodes run (OMP_NUM_THREADS=1): a float forward's sums depend on the thread count
        run_quant(QuantArgs(str(model), str(single), "DeepSeek-V3", config_path=str(config), device="cpu", debug=True))
    logs, codes = run_two_torchrun_nodes(tmp_path, model, nodes, config, "DeepSeek-V3", "--debug", env=IN_PIECES)
    assert codes == [0, 0], "\n\n".join(logs)
    assert "Joined process group: rank 0 of 2" in logs[0] and "Joined process group: rank 1 of 2" in logs[1]
    assert "model.layers.0 is processed in pieces: its attention block, then its MLP" in logs[0]
    assert "model.layers.1 is processed in pieces: its trunk, then 1 routed experts at a time" in logs[0]
    mine0, mine1, total = shares(logs, "loaded and calibrated")
    assert total == 8 and mine0 == mine1 == 4  # 2 MoE layers x 4 experts, one expert per group
    same_checkpoint(single, nodes, logs)
    # --debug: every rank's records gathered on rank 0
    one, two = load_debug_info(single), load_debug_info(nodes)
    assert one.keys() == two.keys() and one["linear_quant"].keys() == two["linear_quant"].keys()
    for key, value in one["linear_quant"].items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, two["linear_quant"][key]), key
    report_one, report_two = (json.loads((out / "quant_report.json").read_text()) for out in (single, nodes))
    assert report_two["run"]["world_size"] == 2
    assert report_two["calib_tokens"] == report_one["calib_tokens"]  # each rank saw its share; rank 0 sums them
    assert report_two["layers"] == report_one["layers"]


DATA_FREE = """\
    - type: linear_quant
      qconfig:
        act: {scope: per_token, dtype: int8, symmetric: true, method: minmax, ext: {}}
        weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}
      exclude: ["*kv_b_proj"]
"""


@pytest.mark.slow
def test_two_torchrun_nodes_split_the_pieces_of_a_data_free_run(tiny_models, small_calib, tmp_path, cli_env):
    """Data-free W8A8 dynamic on a tiny DeepSeek-V3 (MLA, a dense layer, routed and shared experts): each node
    loads and quantizes its own share of the linears (split_pieces.py), rank 0 saves them in order, and the
    checkpoint is byte-identical to one process's."""
    model = tiny_models("deepseek_v3")
    config = write_config(tmp_path, "dynamic", DATA_FREE, small_calib, runner="dp_layer_wise")
    single, nodes = tmp_path / "single", tmp_path / "nodes"
    run_quant(QuantArgs(str(model), str(single), "DeepSeek-V3", config_path=str(config), device="cpu"))
    logs, codes = run_two_torchrun_nodes(tmp_path, model, nodes, config, "DeepSeek-V3")
    assert codes == [0, 0], "\n\n".join(logs)
    mine0, mine1, total = shares(logs, "loaded and quantized")
    assert mine0 + mine1 == total and abs(mine0 - mine1) <= 2
    same_checkpoint(single, nodes, logs)
    assert "matched no" not in logs[0]  # patterns used on rank 1's pieces only are not reported unused
