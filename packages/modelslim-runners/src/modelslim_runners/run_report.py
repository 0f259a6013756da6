"""`quant_report.json`: what a finished run did, written next to the checkpoint before its description.

The description (ascendv1: quant_model_description.json) is written last and marks a complete checkpoint,
so a report is always present beside a complete checkpoint. Fields: `versions` (Python and the packages
that shaped the output), `config_digest` (sha256 of the exported config), `model`, `run` (device, compute
dtype, placement, world size), `stages` (per-unit seconds and host RSS after the unit, from RunSummary),
`layers` (per-linear quantization error, `quant/layer_stats.py`), `layer_error` (a summary of those), and
every other statistics section processors recorded (e.g. `expert_coverage` from MoE processors).
"""

from __future__ import annotations

import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from modelslim_core.io.atomic import write_json_file_atomic
from modelslim_core.runtime.context import RunContext
from modelslim_core.runtime.distributed import rank_and_world
from modelslim_runners.memory import device_peak_bytes, peak_rss_bytes
from modelslim_runners.report import RunSummary

REPORT_NAME = "quant_report.json"
REPORT_FORMAT = "modelslim.quant_report/1"
VERSIONED_PACKAGES = ("modelslim", "modelslim-core", "modelslim-runners", "modelslim-save-ascend", "torch",
                      "transformers", "safetensors", "compressed-tensors")


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def stage_entry(summary: RunSummary) -> dict[str, Any]:
    units = [{"name": name, "seconds": round(seconds, 4), "rss_bytes": rss} for name, seconds, rss in summary.units]
    return {
        "name": summary.stage,
        "units": units,
        "total_seconds": round(sum(u["seconds"] for u in units), 4),
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_device_bytes": device_peak_bytes(summary.device),
        "memory": summary.memory,
    }


def layer_error_summary(layers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    errors = {name: entry["weight_rel_error"] for name, entry in layers.items() if "weight_rel_error" in entry}
    if not errors:
        return {"count": 0}
    worst = max(errors, key=errors.get)
    by_type: dict[str, int] = {}
    for entry in layers.values():
        by_type[entry.get("type", "?")] = by_type.get(entry.get("type", "?"), 0) + 1
    return {
        "count": len(errors),
        "by_type": by_type,
        "mean_weight_rel_error": sum(errors.values()) / len(errors),
        "max_weight_rel_error": errors[worst],
        "worst_layer": worst,
    }


def build_report(context: RunContext, summaries: list[RunSummary], placement: str) -> dict[str, Any]:
    adapter = context.adapter
    stats = context.recorder.stats
    layers = stats.get("layers", {})
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": package_versions(),
        "config_digest": context.config_digest,
        "model": {"model_type": adapter.model_type, "adapter": adapter.family, "model_path": str(context.model_path),
                  "source_dtype": str(adapter.source_dtype).removeprefix("torch.") if adapter.source_dtype else None},
        "run": {"device": str(context.device), "compute_dtype": str(context.compute_dtype).removeprefix("torch."),
                "placement": placement, "world_size": rank_and_world()[1], "debug": context.recorder.debug_enabled},
        "stages": [stage_entry(summary) for summary in summaries],
        "layers": layers,
        "layer_error": layer_error_summary(layers),
    }
    for section, entries in stats.items():
        report.setdefault(section, entries)
    return report


def write_quant_report(context: RunContext, summaries: list[RunSummary], placement: str) -> Path:
    path = Path(context.save_path) / REPORT_NAME
    write_json_file_atomic(path, build_report(context, summaries, placement), indent=2)
    return path
