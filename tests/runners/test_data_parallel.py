"""dp_layer_wise on two CPU worker processes (gloo): same checkpoint as one process, refusals, a dying rank."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.cli._helpers import LOG_ENV, CliResult, run_inprocess

CONFIG = """\
apiversion: modelslim_v1
spec:
  runner: {runner}
  process:
{process}
  save: [{{type: ascendv1_saver, part_file_size: 0}}]
  dataset: {dataset}
"""
W8A8_GROUP = """\
    - type: group
      configs:
        - type: linear_quant
          qconfig:
            act: {scope: per_tensor, dtype: int8, symmetric: false, method: minmax}
            weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}
          include: ["*self_attn*"]
        - type: linear_quant
          qconfig:
            act: {scope: per_token, dtype: int8, symmetric: true, method: minmax, ext: {}}
            weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}
          include: ["*mlp*"]
"""


def write_config(tmp_path: Path, name: str, process: str, dataset: Path, runner: str = "auto") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(CONFIG.format(runner=runner, process=process, dataset=dataset))
    return path


def quant(model: Path, out: Path, config: Path, device: str, env: dict | None = None,
          extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modelslim.cli.main", "quant", "--model_path", str(model), "--save_path", str(out),
         "--model_type", "Qwen2-demo", "--config_path", str(config), "--device", device, *extra],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=1200,  # three interpreters on a loaded 2-core host
        env={**os.environ, "MSMODELSLIM_LOG_LEVEL": "info", **(env or {})},
    )


def quant_refused_in_process(model: Path, out: Path, config: Path, capsys, monkeypatch) -> CliResult:
    """A two-device run that must be refused before any worker starts, through the console script's `main()`
    in this process (info logging on, so a started worker would show): no interpreter import to pay for."""
    monkeypatch.setenv(LOG_ENV, "info")
    return run_inprocess(["--model_path", str(model), "--save_path", str(out), "--model_type", "Qwen2-demo",
                          "--config_path", str(config), "--device", "cpu:0,1"], capsys)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quant_in_process(model: Path, out: Path, config: Path, tags: list[str] | None = None) -> None:
    """The single-process reference run, in this process: the same run_quant the CLI calls, without a second
    interpreter importing torch and transformers (the data-parallel run under test stays a real subprocess)."""
    from modelslim.app.quick_quant import QuantArgs, run_quant  # noqa: PLC0415

    run_quant(QuantArgs(str(model), str(out), "Qwen2-demo", config_path=str(config), device="cpu", tags=tags))


FLEX_AWQ_SSZ = ("    - {type: flex_awq_ssz, qconfig: {act: {scope: per_token, dtype: int8, symmetric: true, method: minmax}, "
                "weight: {scope: per_channel, dtype: int8, symmetric: true, method: ssz}}}\n")


#: Every processor that all-reduces (or all-gathers) statistics, in one data-parallel run so the suite pays one
#: launch of three interpreters instead of four: iter_smooth's min/max statistics are all-reduced, the flex searches
#: see every rank's rows in the single-process order (so their scales, shifts and chosen exponents match), and
#: kv_smooth, dynamic_cache and fa3_quant all-reduce theirs. A rank-order or missing-reduction bug in any of them
#: changes the checkpoint. No case with W8A8_GROUP alone: tests/runners/test_torchrun_nodes.py compares the plain
#: group's two-rank checkpoint to one process's, and tests/observability/test_debug_info.py its debug records.
SMOOTHINGS = "    - {type: iter_smooth, symmetric: false}\n    - {type: flex_smooth_quant}\n" + FLEX_AWQ_SSZ
ATTENTION_AND_SMOOTHING = "    - type: kv_smooth\n" + SMOOTHINGS + W8A8_GROUP + """\
        - type: dynamic_cache
          qconfig: {scope: per_channel, dtype: int8, symmetric: false, method: minmax}
        - type: fa3_quant
"""
#: FA3 on non-MLA attention is a MindIE LLM layout (vLLM-Ascend refuses it).
MINDIE = ["MindIE"]


@pytest.fixture(scope="module")
def single_and_parallel(tiny_models, session_calib, tmp_path_factory):
    """One process's checkpoint (in-process) and the two-rank subprocess run's result and checkpoint."""
    tmp_path = tmp_path_factory.mktemp("dp")
    model = tiny_models("qwen2")
    config = write_config(tmp_path, "all_reducing", ATTENTION_AND_SMOOTHING, session_calib)
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    quant_in_process(model, single, config, tags=MINDIE)
    result = quant(model, parallel, config, "cpu:0,1", extra=("--tag", *MINDIE))
    return single, parallel, result


def test_two_cpu_ranks_run_every_all_reducing_processor(single_and_parallel):
    _single, parallel, result = single_and_parallel
    assert result.returncode == 0, result.stderr
    assert "Runner auto -> dp_layer_wise" in result.stderr and "Starting 2 data-parallel workers" in result.stderr
    assert "iter_smooth smoothed 8 subgraphs" in result.stderr
    assert not [p for p in parallel.iterdir() if p.name.startswith(("rank", "."))]  # no rank dirs, no leftovers
    description = json.loads((parallel / "quant_model_description.json").read_text())
    assert description["model.layers.1.self_attn.fa_k.scale"] == "FAQuant"  # the attention processors ran too
    assert description["model.layers.1.self_attn.v_proj.kv_cache_scale"] == "C8"


@pytest.mark.parametrize("name", ["quant_model_weights.safetensors", "quant_model_description.json"])
def test_two_cpu_ranks_write_the_single_process_checkpoint(single_and_parallel, name):
    single, parallel, result = single_and_parallel
    assert result.returncode == 0, result.stderr
    assert sha(single / name) == sha(parallel / name), name


def test_processors_without_distributed_support_are_refused_before_work(tiny_models, small_calib, tmp_path, cli_env,
                                                                         capsys, monkeypatch):
    config = write_config(tmp_path, "clip", "    - {type: weight_clip}\n" + W8A8_GROUP, small_calib)
    started = time.monotonic()
    result = quant_refused_in_process(tiny_models("qwen2"), tmp_path / "out", config, capsys, monkeypatch)
    assert result.code == 1
    assert "weight_clip cannot run data-parallel" in result.stderr and "Traceback" not in result.stderr
    assert "Starting" not in result.stderr and time.monotonic() - started < 60


CRASH_PLUGIN = '''
import os
from typing import Literal
import torch.distributed as dist
from modelslim_core.runtime.processor import Processor, ProcessorConfig

class CrashConfig(ProcessorConfig):
    type: Literal["crash_rank1"] = "crash_rank1"

class CrashOnRank1(Processor):
    """Test processor: rank 1 dies abruptly on the second unit, as an out-of-memory kill would."""
    config_class = CrashConfig

    @classmethod
    def supports_distributed(cls, config):
        return True

    def preprocess(self, unit):
        if unit.index == 1 and dist.is_initialized() and dist.get_rank() == 1:
            os._exit(17)
'''


def test_a_dying_rank_stops_the_run_with_a_clear_error(tiny_models, small_calib, tmp_path):
    plugin = tmp_path / "plugin"
    (plugin / "crash_plugin-0.1.dist-info").mkdir(parents=True)
    (plugin / "crash_plugin.py").write_text(textwrap.dedent(CRASH_PLUGIN))
    (plugin / "crash_plugin-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: crash-plugin\nVersion: 0.1\n")
    (plugin / "crash_plugin-0.1.dist-info" / "entry_points.txt").write_text(
        "[modelslim.processors]\ncrash_rank1 = crash_plugin:CrashOnRank1\n")
    config = write_config(tmp_path, "crash", "    - {type: crash_rank1}\n" + W8A8_GROUP, small_calib, runner="dp_layer_wise")
    out = tmp_path / "out"
    started = time.monotonic()
    result = quant(tiny_models("qwen2"), out, config, "cpu:0,1", env={"PYTHONPATH": str(plugin), "MSMODELSLIM_DIST_TIMEOUT": "60"})
    assert result.returncode == 1
    assert "data-parallel worker process failed" in result.stderr and "Traceback" not in result.stderr
    # below the 600 s default collective timeout: the dead rank ends the run (at the latest on the 60 s set here);
    # the bound allows three interpreters starting on a loaded 2-core host (244 s was measured at load 21)
    assert time.monotonic() - started < 540
    assert not (out / "quant_model_description.json").exists()
