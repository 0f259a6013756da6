"""`msmodelslim analyze`: rank a model's layers by how much quantizing them costs, and suggest what to exclude.

One quantization with the scheme (the user's config or a practice), one run of the same config with its
quantizing processors removed (the float model after smoothing/rotation, so linears can be swapped one by
one), then a few forwards per unit over a handful of calibration samples (app/sensitivity.py). The result
is a ranked table (analysis.json and analysis.png in --output_dir) and a YAML exclude snippet of the top-k.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modelslim_core.calib.text import load_texts
from modelslim_core.devices import resolve_device
from modelslim_core.errors import UsageError
from modelslim_core.models.resolve import create_adapter
from modelslim_core.protocol.config import parse_quant_config
from modelslim_core.reference_runtime.loader import load_quantized_model

from modelslim.app.confirm import Confirmer
from modelslim.app.evaluate import quantized_linears
from modelslim.app.paths import check_model_path, check_save_path
from modelslim.app.quick_quant import QuantArgs, choose_config, run_quant
from modelslim.app.analysis_choices import METRICS, SCOPES
from modelslim.app.sensitivity import SensitivityMeter, group_units, rank, unit_layers

logger = logging.getLogger("modelslim")

REPORT_NAME = "analysis.json"
PLOT_NAME = "analysis.png"
DEFAULT_METRIC = "mse_model_wise"
DEFAULT_DATASET = "mix_calib.jsonl"
ANALYSIS_TOKENS = 256
LOCAL_ONLY = {"mse_layer_wise", "kurtosis", "std", "quantile"}


@dataclass
class AnalyzeArgs:
    scope: str
    model_path: str
    model_type: str
    output_dir: str
    config_path: str | None = None
    quant_type: str | None = None
    calib_dataset: str | None = None
    topk: int = 15
    metric: str = DEFAULT_METRIC
    device: str | None = None
    max_samples: int = 4
    trust_remote_code: bool = False


def write_private(path: Path, text: str) -> None:
    """Outputs are not world-readable (files 0o640)."""
    path.write_text(text, encoding="utf-8")
    path.chmod(0o640)


def strip_quantization(raw: dict[str, Any], source: str) -> dict[str, Any]:
    """The config without the processors that quantize (those that give layers a checkpoint type): what is
    left (smoothing, rotation) changes the float model without changing its function."""
    parsed = parse_quant_config(raw, source)
    process = getattr(parsed.spec, "process", None)
    if process is None:
        raise UsageError(f"{source}: the {raw.get('apiversion')} service has no spec.process to analyse.",
                         "use a modelslim_v1 or multimodal_vlm_modelslim_v1 config.")
    stripped = copy.deepcopy(raw)
    stripped["spec"]["process"] = [item for item, config in zip(raw["spec"]["process"], process) if not config.export_types()]
    return stripped


def quantize_config(raw: dict[str, Any], args: QuantArgs, work: Path, name: str) -> Path:
    """Run `msmodelslim quant` with the raw config mapping; returns the checkpoint directory."""
    import yaml

    config_file = work / f"{name}.yaml"
    write_private(config_file, yaml.safe_dump(raw, sort_keys=False))
    out = work / name
    run_quant(QuantArgs(args.model_path, str(out), args.model_type, config_path=str(config_file), device=args.device,
                        trust_remote_code=args.trust_remote_code, yes=True))
    return out


def analysis_samples(raw: dict[str, Any], source: str, model_path: Path, model_type: str, dataset: str,
                     max_samples: int, device: torch.device, trust_remote_code: bool = False) -> list[dict]:
    """The model's inputs for the first `max_samples` samples: what the config's service feeds it when the
    service builds its own (a VLM's image/video/audio prompts through its processor), else tokenized text."""
    parsed = parse_quant_config({**raw, "spec": {**raw["spec"], "dataset": dataset}}, source)
    build = getattr(parsed.service, "calibration_inputs", None)
    if build is None:
        return tokenized_samples(model_path, dataset, max_samples, device)
    adapter = create_adapter(model_type, model_path, trust_remote_code)
    inputs = build(parsed.spec, adapter, max_samples)
    return [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in sample.items()} for sample in inputs]


def tokenized_samples(model_path: Path, dataset: str, max_samples: int, device: torch.device) -> list[dict]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    texts = load_texts(dataset)[:max_samples]
    return [{k: v.to(device) for k, v in tokenizer(t, return_tensors="pt", truncation=True, max_length=ANALYSIS_TOKENS).items()}
            for t in texts]


def check_args(args: AnalyzeArgs) -> None:
    """Everything checkable before a model is loaded."""
    if args.scope not in SCOPES:
        raise UsageError(f"analyze scope {args.scope!r} is unknown.", f"use one of: {', '.join(SCOPES)}.")
    if args.metric not in METRICS:
        raise UsageError(f"--metric {args.metric!r} is unknown.", f"use one of: {', '.join(METRICS)}.")
    if args.topk < 1 or args.max_samples < 1:
        raise UsageError("--topk and --max_samples must be at least 1.", "pass a positive number.")


@dataclass
class Measured:
    """The analysis of one scheme: Q's whole divergence, ranked rows, and where the checkpoints are."""

    divergence: float
    rows: list[dict]
    quant_dir: Path
    float_dir: Path
    layers: dict[str, list[str]]  # unit pattern -> its linears, MoE experts collapsed to expert 0


def measure_scheme(raw: dict[str, Any], source: str, quant: QuantArgs, work: Path, scope: str, metric: str,
                   dataset: str, max_samples: int, quantizing=contextlib.nullcontext) -> Measured:
    """Quantize with `raw` (inside the `quantizing()` context: tune lets that run fill its unit cache) and with
    its quantizers stripped, then measure every unit of `scope`."""
    with quantizing():
        quant_dir = quantize_config(raw, quant, work, "quantized")
    float_dir = quantize_config(strip_quantization(raw, source), quant, work, "float_transformed")
    device = resolve_device(quant.device).torch_device
    model_path = Path(quant.model_path)
    float_model = load_quantized_model(model_path, float_dir, torch.float32, device)
    quant_model = load_quantized_model(model_path, quant_dir, torch.float32, device)
    kernels = quantized_linears(float_model, quant_model)
    if not kernels:
        raise UsageError(f"{source}: the scheme quantizes no linear of this model, so there is nothing to rank.",
                         "check the config's include/exclude patterns.")
    units = group_units(list(kernels), scope)
    samples = analysis_samples(raw, source, model_path, quant.model_type, dataset, max_samples, device,
                               quant.trust_remote_code)
    meter = SensitivityMeter(float_model, quant_model, kernels, samples)
    divergence, rows = meter.measure(units, end_to_end=metric not in LOCAL_ONLY)
    layers = {unit.pattern: unit_layers(unit) for unit in units}
    return Measured(divergence, rank(rows, metric), quant_dir, float_dir, layers)


def exclude_snippet(rows: list[dict], topk: int) -> str:
    lines = [f"# top {min(topk, len(rows))} most sensitive: add to the linear_quant exclude list", "exclude:"]
    return "\n".join(lines + [f'  - "{row["pattern"]}"' for row in rows[:topk]])


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(report["units"], key=lambda row: row["order"])
    metric, top = report["metric"], {row["unit"] for row in report["units"][: report["topk"]]}
    fig, ax = plt.subplots(figsize=(max(6.0, 0.2 * len(rows)), 4.0))
    ax.bar(range(len(rows)), [row[metric] for row in rows], color=["C3" if row["unit"] in top else "C0" for row in rows])
    ax.set_xlabel(f"{report['scope']} (model order; red: suggested exclude)")
    ax.set_ylabel(metric)
    ax.set_title(f"sensitivity of {len(rows)} units, {report['model_quant_type']}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    path.chmod(0o640)


def format_table(report: dict) -> str:
    metric = report["metric"]
    width = max([len(row["unit"]) for row in report["units"]] + [4])
    lines = [f"{'rank':>4}  {'unit':<{width}}  {metric:>14}  {'mse_layer_wise':>14}"]
    lines += [f"{row['rank']:>4}  {row['unit']:<{width}}  {row[metric]:>14.6g}  {row['mse_layer_wise']:>14.6g}"
              for row in report["units"]]
    return "\n".join(lines + ["", report["exclude_yaml"]])


def run_analyze(args: AnalyzeArgs) -> dict:
    started = time.perf_counter()
    check_args(args)
    model_path = check_model_path(args.model_path)
    output_dir = check_save_path(args.output_dir, model_path)
    resolve_device(args.device)
    adapter = create_adapter(args.model_type, model_path, args.trust_remote_code)
    quant = QuantArgs(str(model_path), "", args.model_type, args.config_path, args.quant_type, args.device,
                      trust_remote_code=args.trust_remote_code, yes=True)
    raw, source = choose_config(quant, adapter.pedigree, Confirmer(True))
    dataset = args.calib_dataset or (raw.get("spec") or {}).get("dataset") or DEFAULT_DATASET
    output_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    work = output_dir / "analysis_work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o750)
    try:
        measured = measure_scheme(raw, source, quant, work, args.scope, args.metric, dataset, args.max_samples)
        quant_type = json.loads((measured.quant_dir / "quant_model_description.json").read_text())["model_quant_type"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "model_path": str(model_path), "config": source, "model_quant_type": quant_type, "scope": args.scope,
        "metric": args.metric, "dataset": dataset, "samples": args.max_samples, "topk": args.topk,
        "divergence_all_quantized": measured.divergence,
        "units": measured.rows,
        "exclude": [row["pattern"] for row in measured.rows[: args.topk]],
        "exclude_yaml": exclude_snippet(measured.rows, args.topk),
        "elapsed_seconds": round(time.perf_counter() - started, 2),
    }
    write_private(output_dir / REPORT_NAME, json.dumps(report, indent=2))
    plot(report, output_dir / PLOT_NAME)
    return report
