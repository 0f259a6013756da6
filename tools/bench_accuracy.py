"""Perplexity of every export type and weight method on a causal LM, through save + reload.

For each configuration below, the model is quantized with `msmodelslim quant` (every linear of the decoder
layers, or the w4a8 practice's attention/MLP split), saved as ascendv1 and reloaded by the reference runtime
(so what is measured is what was saved), or, for the rows marked [compressed-tensors] (types vLLM-Ascend
does not load from ascendv1), saved with compressed_tensors_saver and reloaded by transformers' reader; then
evaluated with `msmodelslim eval` on a held-out set. Printed: a Markdown table of float and quantized perplexity and their ratio. W8A8_MIX is evaluated on whole
sequences, i.e. on its dynamic prefill path.

Usage (from the repository root):
    .venv/bin/python tools/bench_accuracy.py --model_path examples/qwen2-demo --group_size 32
    .venv/bin/python tools/bench_accuracy.py --model_path DIR --only gptq,W4A8   # substring filter
    .venv/bin/python tools/bench_accuracy.py --model_path examples/qwen2-demo --dataset demo_heldout.jsonl \
        --group_size 128 --per_group_exclude '*down_proj*' --only per_group

A per-group row quantizes every decoder linear whose input dim the group size divides; a run refuses any
other layer, so such layers must be named in `--per_group_exclude` (they then stay float in that row, for
minmax and GPTQ alike, and the row's name says so).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from modelslim.app.evaluate import EvalArgs, run_eval
from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.protocol.qconfig import LinearQConfig
from modelslim_core.protocol.saver_choice import saver_for
from modelslim_core.protocol.yaml_io import dump_yaml

Item = tuple[str, dict[str, Any] | None, dict[str, Any]]  # include pattern, act qconfig (None: float), weight qconfig


def q(dtype: str, scope: str, symmetric: bool, method: str = "minmax", **ext: Any) -> dict[str, Any]:
    return {"dtype": dtype, "scope": scope, "symmetric": symmetric, "method": method, **({"ext": ext} if ext else {})}


def configurations(group_size: int) -> dict[str, list[Item]]:
    """Name -> linear_quant items. Each type is applied to every decoder linear so the row measures that type."""
    token8, token4 = q("int8", "per_token", True), q("int4", "per_token", True)
    int8_pc, int4_pc = q("int8", "per_channel", True), q("int4", "per_channel", True)
    mx8, mx4 = q("mxfp8", "per_block", True), q("mxfp4", "per_block", True)

    def everywhere(act: dict[str, Any] | None, weight: dict[str, Any]) -> list[Item]:
        return [("*", act, weight)]

    return {
        "W8A16 minmax": everywhere(None, int8_pc),
        f"W8A16 per_group {group_size} gptq": everywhere(None, q("int8", "per_group", True, "gptq", group_size=group_size)),
        "W8A8 minmax": everywhere(q("int8", "per_tensor", False), int8_pc),
        "W8A8 histogram": everywhere(q("int8", "per_tensor", False, "histogram"), int8_pc),
        "W8A8_MIX (prefill path)": everywhere(q("int8", "pd_mix", False), int8_pc),
        "W8A8_DYNAMIC minmax": everywhere(token8, int8_pc),
        f"W8A8_DYNAMIC per_group {group_size}": everywhere(token8, q("int8", "per_group", True, group_size=group_size)),
        "W4A8_DYNAMIC minmax": everywhere(token8, int4_pc),
        "W4A8_DYNAMIC ssz": everywhere(token8, q("int4", "per_channel", True, "ssz")),
        "W4A8_DYNAMIC gptq": everywhere(token8, q("int4", "per_channel", True, "gptq")),
        "W4A8_DYNAMIC gptq act_order": everywhere(token8, q("int4", "per_channel", True, "gptq", act_order=True)),
        "w4a8 practice (attn W8A8_DYNAMIC, MLP W4A8_DYNAMIC gptq)": [
            ("*self_attn*", token8, int8_pc),
            ("*mlp*", token8, q("int4", "per_channel", True, "gptq", percdamp=0.01, block_size=128)),
        ],
        "W4A4_DYNAMIC minmax": everywhere(token4, int4_pc),
        "W4A4_DYNAMIC gptq": everywhere(token4, q("int4", "per_channel", True, "gptq")),
        f"W4A4_DYNAMIC per_group {group_size} minmax": everywhere(token4, q("int4", "per_group", True, group_size=group_size)),
        f"W4A4_DYNAMIC per_group {group_size} gptq": everywhere(token4, q("int4", "per_group", True, "gptq", group_size=group_size)),
        f"W4A4_DYNAMIC per_group {group_size} gptq act_order": everywhere(
            token4, q("int4", "per_group", True, "gptq", group_size=group_size, act_order=True)),
        "W4A16 gptq [compressed-tensors]": everywhere(None, q("int4", "per_channel", True, "gptq")),
        f"W4A16 per_group {group_size} gptq [compressed-tensors]": everywhere(
            None, q("int4", "per_group", True, "gptq", group_size=group_size)),
        f"W4A8_DYNAMIC per_group {group_size} gptq [compressed-tensors]": everywhere(
            token8, q("int4", "per_group", True, "gptq", group_size=group_size)),
        "W8A8FP8_DYNAMIC": everywhere(q("fp8_e4m3", "per_token", True), q("fp8_e4m3", "per_channel", True)),
        "W8A8_MXFP8": everywhere(mx8, mx8),
        "W4A8_MXFP": everywhere(mx8, mx4),
        "W4A4_MXFP4": everywhere(mx4, mx4),
    }


def config_document(items: list[Item], calib: str, per_group_exclude: list[str] | None = None) -> dict[str, Any]:
    configs = []
    for include, act, weight in items:
        qconfig = {"weight": weight, **({"act": act} if act else {})}
        config: dict[str, Any] = {"type": "linear_quant", "qconfig": qconfig, "include": [include]}
        if per_group_exclude and weight["scope"] == "per_group":
            config["exclude"] = list(per_group_exclude)
        configs.append(config)
    return {
        "apiversion": "modelslim_v1",
        "spec": {
            "runner": "model_wise",
            "process": [{"type": "group", "configs": configs}],
            "save": [{"type": saver_for({LinearQConfig.model_validate(c["qconfig"]).export_type for c in configs}),
                      "part_file_size": 0}],
            "dataset": calib,
        },
    }


def measure(name: str, items: list[Item], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    slug = "".join(c if c.isalnum() else "_" for c in name)
    config, out = work / f"{slug}.yaml", work / slug
    document = config_document(items, args.calib, args.per_group_exclude)
    config.write_text(dump_yaml(document), encoding="utf-8")
    started = time.perf_counter()
    run_quant(QuantArgs(args.model_path, str(out), args.model_type, config_path=str(config), device="cpu", yes=True))
    quantize_seconds = time.perf_counter() - started
    report = run_eval(EvalArgs(args.model_path, str(out), args.dataset, "cpu", args.max_samples))
    return {"name": name, "float": report["float"], "quantized": report["quantized"], "ratio": report["ratio"],
            "tokens": report["tokens"], "quantize_seconds": round(quantize_seconds, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--model_type", default="Qwen2-demo", help="picks the model adapter (default: generic Qwen2 naming)")
    parser.add_argument("--calib", default="mix_calib.jsonl", help="calibration dataset (short name in calib/ or a path)")
    parser.add_argument("--dataset", default="heldout_eval.jsonl", help="evaluation dataset")
    parser.add_argument("--group_size", type=int, default=128)
    parser.add_argument("--per_group_exclude", type=lambda text: [p for p in text.split(",") if p], default=[],
                        help="comma-separated patterns of layers the per-group rows leave float (input dim not a multiple)")
    parser.add_argument("--max_samples", type=int, default=None, help="evaluation samples (default: all)")
    parser.add_argument("--only", default="", help="comma-separated substrings; run only matching configurations")
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    wanted = [part.strip() for part in args.only.split(",") if part.strip()]
    named = configurations(args.group_size)
    if args.per_group_exclude:
        suffix = f" (float: {', '.join(args.per_group_exclude)})"
        named = {n + suffix if f"per_group {args.group_size}" in n else n: i for n, i in named.items()}
    selected = {n: i for n, i in named.items() if not wanted or any(w in n for w in wanted)}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, items in selected.items():
            results.append(measure(name, items, args, Path(tmp)))
            print(f"{name}: ppl {results[-1]['quantized']:.4f} (float {results[-1]['float']:.4f})", file=sys.stderr, flush=True)
    print(f"\nModel: {args.model_path}; calibration {args.calib}; evaluation {args.dataset} ({results[0]['tokens']} tokens)\n")
    print("| configuration | float ppl | quantized ppl | ratio | quantize s |")
    print("|---|---|---|---|---|")
    for row in results:
        print(f"| {row['name']} | {row['float']:.3f} | {row['quantized']:.3f} | {row['ratio']:.4f} | {row['quantize_seconds']} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
