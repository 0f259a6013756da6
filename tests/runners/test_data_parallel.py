"""dp_layer_wise on two CPU worker processes (gloo): same checkpoint as one process, refusals, a dying rank."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

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
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600,
        env={**os.environ, "MSMODELSLIM_LOG_LEVEL": "info", **(env or {})},
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def quant_in_process(model: Path, out: Path, config: Path, tags: list[str] | None = None) -> None:
    """The single-process reference run, in this process: the same run_quant the CLI calls, without a second
    interpreter importing torch and transformers (the data-parallel run under test stays a real subprocess)."""
    from modelslim.app.quick_quant import QuantArgs, run_quant  # noqa: PLC0415

    run_quant(QuantArgs(str(model), str(out), "Qwen2-demo", config_path=str(config), device="cpu", tags=tags))


FLEX_AWQ_SSZ = ("    - {type: flex_awq_ssz, qconfig: {act: {scope: per_token, dtype: int8, symmetric: true, method: minmax}, "
                "weight: {scope: per_channel, dtype: int8, symmetric: true, method: ssz}}}\n")


#: No case with W8A8_GROUP alone: each case below runs it after its smoothing, tests/runners/test_torchrun_nodes.py
#: compares the plain group's two-rank checkpoint to one process's, and tests/observability/test_debug_info.py its
#: debug records and report.
@pytest.mark.parametrize("smoothing", ["    - {type: iter_smooth, symmetric: false}\n", "    - {type: flex_smooth_quant}\n",
                                       FLEX_AWQ_SSZ], ids=["iter_smooth+w8a8", "flex_smooth_quant+w8a8",
                                                           "flex_awq_ssz+w8a8"])
def test_two_cpu_ranks_write_the_single_process_checkpoint(tiny_models, small_calib, tmp_path, smoothing):
    """The W8A8 group after smoothing: iter_smooth's min/max statistics are all-reduced, and the flex searches
    see every rank's rows in the single-process order, so their scales, shifts and chosen exponents match too."""
    model = tiny_models("qwen2")
    config = write_config(tmp_path, "w8a8", smoothing + W8A8_GROUP, small_calib)
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    quant_in_process(model, single, config)
    result = quant(model, parallel, config, "cpu:0,1")
    assert result.returncode == 0, result.stderr
    assert "Runner auto -> dp_layer_wise" in result.stderr and "Starting 2 data-parallel workers" in result.stderr
    assert "iter_smooth" not in smoothing or "iter_smooth smoothed 8 subgraphs" in result.stderr
    for name in ("quant_model_weights.safetensors", "quant_model_description.json"):
        assert sha(single / name) == sha(parallel / name), name
    assert not [p for p in parallel.iterdir() if p.name.startswith(("rank", "."))]  # no rank dirs, no leftovers


def test_processors_without_distributed_support_are_refused_before_work(tiny_models, small_calib, tmp_path):
    config = write_config(tmp_path, "clip", "    - {type: weight_clip}\n" + W8A8_GROUP, small_calib)
    started = time.monotonic()
    result = quant(tiny_models("qwen2"), tmp_path / "out", config, "cpu:0,1")
    assert result.returncode == 1
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
    assert time.monotonic() - started < 180
    assert not (out / "quant_model_description.json").exists()
