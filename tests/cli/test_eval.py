"""`msmodelslim eval` end to end in a subprocess, and its report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim.cli.main import main

REPORT_FIELDS = {"model_path", "quant_path", "model_quant_type", "dataset", "samples", "tokens", "metric", "float",
                 "quantized", "ratio", "out_of_domain", "layers", "layer_tokens_per_sample", "elapsed_seconds", "versions"}


def run_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelslim.cli.main", "eval", *args], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, env={**os.environ, "MSMODELSLIM_LOG_LEVEL": "info"},
                          timeout=900)  # minutes under a loaded 2-core CI host


def test_eval_reports_layers_and_perplexity(tiny_models, tmp_path):
    model_dir = tiny_models("llama")
    out = tmp_path / "out"
    run_quant(QuantArgs(str(model_dir), str(out), "Llama-3.1-8B-Instruct", quant_type="w8a16", device="cpu"))
    result = run_eval("--model_path", str(model_dir), "--quant_path", str(out), "--device", "cpu", "--max_samples", "3")
    assert result.returncode == 0, result.stderr
    assert "model.layers.1.mlp.down_proj" in result.stdout and "perplexity: float" in result.stdout
    report = json.loads((out / "eval_report.json").read_text())
    assert set(report) == REPORT_FIELDS
    assert report["metric"] == "perplexity" and report["samples"] == 3 and report["model_quant_type"] == "W8A16"
    assert len(report["layers"]) == 2 * 7
    assert all(layer["tag"] == "W8A16" and layer["rel_l2"] < 0.02 and layer["cosine"] > 0.999 for layer in report["layers"])
    assert abs(report["ratio"] - 1) < 0.01
    assert (out / "eval_layer_error.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_of_something_that_is_not_a_checkpoint(tiny_models, tmp_path, cli_env, capsys):
    """Refusals through the console script's `main()` in this process (the subprocess run above covers the process
    itself): two more interpreters would each pay ~8 s of imports to print one line."""
    model_dir = tiny_models("llama")
    capsys.readouterr()
    code = main(["eval", "--model_path", str(model_dir), "--quant_path", str(tmp_path), "--device", "cpu"])
    stderr = capsys.readouterr().err
    assert code == 1
    assert "is not a quantized checkpoint" in stderr and "Traceback" not in stderr
    code = main(["eval", "--model_path", str(model_dir), "--quant_path", str(tmp_path), "--max_samples", "0"])
    assert code == 2 and "--max_samples" in capsys.readouterr().err
