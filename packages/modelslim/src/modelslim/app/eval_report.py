"""What `msmodelslim eval` shows and keeps: a per-layer table, a summary line, eval_report.json and a plot."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from modelslim_core.io.atomic import write_text_atomic
from modelslim_core.io.permissions import secure
from modelslim_save_ascend.output_dir import EVAL_PLOT_NAME as PLOT_NAME
from modelslim_save_ascend.output_dir import EVAL_REPORT_NAME as REPORT_NAME

from modelslim.app.eval_data import out_of_domain_note


def _versions() -> dict[str, str]:
    found = {}
    for package in ("modelslim", "torch", "transformers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found


def format_table(report: dict) -> str:
    width = max([len(layer["name"]) for layer in report["layers"]] + [5])
    lines = [f"{'layer':<{width}}  {'type':<13} {'rel_l2':>9} {'cosine':>9}"]
    lines += [
        f"{layer['name']:<{width}}  {layer['tag']:<13} {layer['rel_l2']:>9.5f} {layer['cosine']:>9.6f}"
        for layer in report["layers"]
    ]
    summary = (
        f"{report['metric']}: float {report['float']:.4f}, quantized {report['quantized']:.4f}, "
        f"ratio {report['ratio']:.4f} ({report['samples']} samples, {report['tokens']} tokens, "
        f"{report['model_quant_type']})"
    )
    notes = [out_of_domain_note(report)] if report.get("out_of_domain") else []
    return "\n".join(lines + ["", summary, *notes])


def plot_layer_errors(report: dict, path: Path) -> None:
    # a bare Figure on the Agg canvas: no pyplot (its import and global figure state cost more than the plot)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    layers = report["layers"]
    fig = Figure(figsize=(max(6.0, 0.18 * len(layers)), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    colors = {tag: f"C{i}" for i, tag in enumerate(sorted({layer["tag"] for layer in layers}))}
    ax.bar(range(len(layers)), [layer["rel_l2"] for layer in layers], color=[colors[layer["tag"]] for layer in layers])
    ax.set_xlabel("quantized linear (model order)")
    ax.set_ylabel("relative L2 error of the output")
    ax.set_title(f"{report['model_quant_type']}: {report['metric']} ratio {report['ratio']:.4f}")
    ax.legend(handles=[Patch(color=color, label=tag) for tag, color in colors.items()])
    # fixed margins that hold the labels: tight_layout measured every text's extent, a third of the plot's cost
    fig.subplots_adjust(left=0.95 / fig.get_figwidth(), right=1 - 0.15 / fig.get_figwidth(), bottom=0.12, top=0.91)
    fig.savefig(path, dpi=100)


def write_report(report: dict, quant_path: Path) -> None:
    report["versions"] = _versions()
    write_text_atomic(quant_path / REPORT_NAME, json.dumps(report, indent=2))
    plot_layer_errors(report, quant_path / PLOT_NAME)
    secure(quant_path / PLOT_NAME)
