"""Benchmark: quantizing checkpoints of real layer size under a hard memory cap.

Cases (issue "Scale to the checkpoints users quantize"):
  (a) Qwen2.5-72B dimensions (hidden 8192, intermediate 29568, 64 heads, 8 KV heads), `--layers` layers.
  (b) DeepSeek-V3 dimensions (hidden 7168, MLA, 1 dense + 1 MoE layer with `--experts` routed experts of
      7168x2048 and the shared expert).
Each checkpoint is built tensor by tensor (tools/scale_checkpoints.py: the model is never instantiated),
then `msmodelslim quant` runs in a cgroup v1 child with `memory.limit_in_bytes` = `--cap` (tools/capped_run.py).
Printed per run: peak RSS (kernel accounting), wall and CPU time, the I/O floor (bytes read + written at the
disk speed measured while building the checkpoint), the forward floor (one float32 matmul over the
calibration tokens per linear, measured on a 4096x4096 linear and scaled by the decoder's weight elements,
routed experts by the share of tokens they receive; 0 for data-free schemes), the calibration time as a
multiple of it, and the largest piece's plan vs measured memory from quant_report.json; then the projected wall time of the
full DeepSeek-V3 (3 dense + 58 MoE layers of 256 experts) and Qwen2.5-72B (80 layers) on this machine,
from the measured time per layer and per routed expert.

    uv run python tools/bench_scale.py --case a --layers 2 --cap 4
    uv run python tools/bench_scale.py --case b --experts 64 --cap 4 --schemes w8a8_dynamic
    uv run python tools/bench_scale.py --case b --experts 8 --cap 5 --schemes w8a8_practice --identity
    uv run python tools/bench_scale.py --case a --layers 4 --vocab 32000 --cap 5 --schemes w8a8_dynamic w8a8c8_practice

Calibrated schemes on a MoE layer that does not fit the cap run it in pieces (trunk, then groups of routed
experts); `--identity` reruns each scheme with a larger budget (`--reference_cap`, 0: none) and says whether the
checkpoints are identical. `--json` keeps the rows; each run's log is kept in the work directory.

Wall times depend on what else runs on the machine: the load average is printed with every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from capped_run import run_capped  # noqa: E402
from scale_checkpoints import REPO, build_checkpoint, deepseek_v3_config, qwen2_72b_config  # noqa: E402

GIB = 2**30
DYNAMIC = "{scope: per_token, dtype: int8, symmetric: true, method: minmax}"
INT8 = "{scope: per_channel, dtype: int8, symmetric: true, method: minmax}"
SCHEMES = {
    "w8a8_dynamic": ("", f"act: {DYNAMIC}\n        weight: {{scope: per_channel, dtype: int8, symmetric: true, method: minmax}}"),
    "w8a8_static": ("dataset", "act: {scope: per_tensor, dtype: int8, symmetric: false, method: minmax}\n"
                    "        weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}"),
    "w4a8_gptq": ("dataset", f"act: {DYNAMIC}\n        weight: {{scope: per_channel, dtype: int4, symmetric: true, method: gptq}}"),
}
#: Whole process lists (the DeepSeek w8a8 practice's shape: static attention and dynamic MLP in one forward).
PROCESSES = {
    "w8a8_practice": ("dataset", f"""    - type: group
      configs:
        - type: linear_quant
          qconfig: {{act: {{scope: per_tensor, dtype: int8, symmetric: false, method: minmax}}, weight: {INT8}}}
          include: ["*self_attn*"]
          exclude: ["*kv_b_proj"]
        - type: linear_quant
          qconfig: {{act: {DYNAMIC}, weight: {INT8}}}
          include: ["*mlp.*"]
          exclude: ["*mlp.gate"]"""),
}
#: W4A8 per-channel as vLLM-Ascend loads it (the DeepSeek w4a8 practice's layout, data-free): int4 routed experts,
#: W8A8_DYNAMIC everywhere else (its dense-linear W4A8 needs a per-group scale the format does not carry).
PROCESSES["w4a8_per_channel"] = ("", f"""    - type: group
      configs:
        - type: linear_quant
          qconfig: {{act: {DYNAMIC}, weight: {INT8}}}
          include: ["*self_attn*", "*mlp.gate_proj", "*mlp.up_proj", "*mlp.down_proj", "*mlp.shared_experts.*"]
          exclude: ["*kv_b_proj"]
        - type: linear_quant
          qconfig: {{act: {DYNAMIC}, weight: {{scope: per_channel, dtype: int4, symmetric: true, method: minmax}}}}
          include: ["*mlp.experts.*"]""")
#: The w8a8 practice plus an int8 KV cache (C8: dynamic_cache, one scale per KV channel) in the same forward;
#: GQA attention only (case a): vLLM-Ascend has no C8 layout for MLA.
PROCESSES["w8a8c8_practice"] = ("dataset", PROCESSES["w8a8_practice"][1] + """
        - type: dynamic_cache
          qconfig: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}""")
#: Dense-linear W4A8 is loaded from compressed-tensors checkpoints (vLLM-Ascend's ascendv1 W4A8 is experts-only).
SAVERS = {"w4a8_gptq": "{type: compressed_tensors_saver}"}
CASES = {
    "a": {"model_type": "Qwen2.5-72B-Instruct", "full_layers": 80, "exclude": []},
    "b": {"model_type": "DeepSeek-V3", "full_layers": 61, "exclude": ["*kv_b_proj*", "*mlp.gate"]},
}


def needs_data(scheme: str) -> bool:
    return bool((SCHEMES.get(scheme) or PROCESSES[scheme])[0])


def config_text(scheme: str, exclude: list[str], dataset: Path) -> str:
    lines = ["apiversion: modelslim_v1", "spec:", "  runner: layer_wise", "  process:"]
    if scheme in PROCESSES:
        lines.append(PROCESSES[scheme][1])
    else:
        lines += ["    - type: linear_quant", "      qconfig:", f"        {SCHEMES[scheme][1]}"]
        if exclude:
            lines.append(f"      exclude: {json.dumps(exclude)}")
    needs = needs_data(scheme)
    lines.append(f"  save: [{SAVERS.get(scheme, '{type: ascendv1_saver, part_file_size: 4}')}]")
    if needs:
        lines.append(f"  dataset: {dataset}")
    return "\n".join(lines) + "\n"


def calibration_set(work: Path, samples: int) -> Path:
    path = work / "calib.jsonl"
    text = "Quantization keeps the accuracy of a large model while it shrinks its weights. " * 6
    path.write_text("".join(json.dumps({"text": f"{i}: {text}"}) + "\n" for i in range(samples)))
    return path


def forward_elements(model: Path) -> float:
    """Weight elements one float forward multiplies every calibration token by: the decoder layers' matrices,
    routed experts weighted by the share of tokens each receives (top-k of n); embeddings and the LM head
    (not run during calibration) and vectors (norms, biases) left out."""
    from safetensors import safe_open

    config = json.loads((model / "config.json").read_text())
    routed_share = config.get("num_experts_per_tok", 1) / max(1, config.get("n_routed_experts") or 1)
    total = 0.0
    for file in sorted(model.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                shape = handle.get_slice(name).get_shape()
                if len(shape) < 2 or "embed_tokens" in name or name.startswith("lm_head"):
                    continue
                elements = 1.0
                for size in shape:
                    elements *= size
                total += elements * (routed_share if ".mlp.experts." in name else 1.0)
    return total


def forward_floor_per_element(tokens: int) -> float:
    """Seconds per weight element of one float32 matmul over `tokens` rows (measured on a 4096x4096 linear)."""
    import torch

    weight, x = torch.randn(4096, 4096), torch.randn(tokens, 4096)
    x @ weight.T
    started = time.perf_counter()
    x @ weight.T
    return (time.perf_counter() - started) / weight.numel()


def projected_seconds(case: str, report: dict, experts: int) -> dict[str, float]:
    """Full-model wall time from the measured units: per dense layer, and per routed expert for MoE layers."""
    units = report["stages"][-1]["units"]
    seconds = [u["seconds"] for u in units]
    if case == "a":
        return {"Qwen2.5-72B (80 layers)": sum(seconds) / len(seconds) * 80}
    if len(seconds) == 1:  # MoE layer only (--dense_layers 0)
        return {"DeepSeek-V3 MoE layers (58 of 256 experts)": 58 * seconds[0] / experts * 256}
    dense, moe = seconds[0], seconds[-1]
    # DeepSeek-V3: 3 dense layers, 58 MoE layers of 256 routed experts; a MoE layer scales with its expert count
    # beyond what the dense layer (attention + one MLP) costs.
    per_expert = max(0.0, moe - dense) / experts
    return {"DeepSeek-V3 (3 dense + 58 MoE layers)": 3 * dense + 58 * (dense + 256 * per_expert)}


def run_case(args: argparse.Namespace, case: str, work: Path) -> list[dict]:
    shape = (f"l{args.layers}" if case == "a" else f"e{args.experts}_d{args.dense_layers}") + f"_v{args.vocab or 0}"
    model = work / f"model_{case}_{shape}"
    if not (model / "model.safetensors.index.json").is_file():
        vocab = {"vocab": args.vocab} if args.vocab else {}
        config = (qwen2_72b_config(args.layers, **vocab) if case == "a"
                  else deepseek_v3_config(args.experts, dense_layers=args.dense_layers, **vocab))
        started = time.perf_counter()
        size = build_checkpoint(model, config, CASES[case]["model_type"])
        build_seconds = time.perf_counter() - started
        (model / "bench_build.json").write_text(json.dumps({"bytes": size, "seconds": build_seconds}))
    build = json.loads((model / "bench_build.json").read_text())
    disk_speed = 2 * build["bytes"] / build["seconds"]  # the build writes every byte twice (payload, assembly)
    print(f"case ({case}): checkpoint {build['bytes'] / GIB:.2f} GiB, built at {disk_speed / 2**20:.0f} MiB/s disk speed")
    dataset = calibration_set(work, args.samples)
    tokens = args.samples * 80
    floor_per_element = forward_floor_per_element(tokens)
    elements = forward_elements(model)
    results = []
    for scheme in args.schemes:
        out = work / f"out_{case}_{scheme}"
        shutil.rmtree(out, ignore_errors=True)
        yaml = work / f"{case}_{scheme}.yaml"
        yaml.write_text(config_text(scheme, CASES[case]["exclude"], dataset))
        command = [sys.executable, "-m", "modelslim.cli.main", "quant", "--model_path", str(model), "--save_path",
                   str(out), "--model_type", CASES[case]["model_type"], "--config_path", str(yaml), "--device", "cpu",
                   "--max_memory", f"{int(args.cap * 1024)}MiB", "-y"]
        load = os.getloadavg()[0]
        result = run_capped(command, int(args.cap * GIB), log=work / f"{case}_{scheme}.log")
        row = {"case": case, "scheme": scheme, "cap_gib": args.cap, "returncode": result.returncode,
               "oom_killed": result.oom_killed, "peak_rss_gib": result.peak_rss / GIB, "wall_s": result.seconds,
               "cpu_s": result.cpu_seconds, "load_before": load}
        if result.returncode != 0:
            print(result.stderr[-3000:], file=sys.stderr)
            results.append(row)
            continue
        report = json.loads((out / "quant_report.json").read_text())
        row["peak_rss_gib"] = max(result.peak_rss, report["stages"][-1]["peak_rss_bytes"]) / GIB
        written = sum(f.stat().st_size for f in out.glob("*.safetensors"))
        io_bytes = build["bytes"] + written
        row["io_floor_s"] = io_bytes / disk_speed
        needs_forward = needs_data(scheme)
        row["forward_floor_s"] = floor_per_element * elements if needs_forward else 0.0
        row["calibration_s"] = sum(u["seconds"] for u in report["stages"][-1]["units"])
        memory = report["stages"][-1].get("memory") or {}
        pieces = memory.get("pieces", {})
        if pieces:
            kind, figures = max(pieces.items(), key=lambda item: item[1]["plan_bytes"])
            row["largest_piece"] = kind
            row["piece_plan_gib"] = figures["plan_bytes"] / GIB
            row["piece_measured_gib"] = max(f["measured_bytes"] for f in pieces.values()) / GIB
            row["baseline_gib"] = memory["baseline_bytes"] / GIB
            row["pieces"] = {name: {"count": f["count"], "plan_gib": f["plan_bytes"] / GIB,
                                    "measured_gib": f["measured_bytes"] / GIB} for name, f in pieces.items()}
        row["projected_s"] = projected_seconds(case, report, args.experts)
        if args.identity:
            row.update(reference_identity(command, out, work / f"out_{case}_{scheme}_reference", args.reference_cap,
                                          args.keep))
        results.append(row)
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
    return results


def checkpoint_digest(out: Path) -> dict[str, str]:
    """sha256 of every file of a checkpoint but quant_report.json (timings)."""
    import hashlib

    digests = {}
    for path in sorted(out.iterdir()):
        if path.is_file() and path.name != "quant_report.json":
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(2**24), b""):
                    digest.update(block)
            digests[path.name] = digest.hexdigest()
    return digests


def reference_identity(command: list[str], capped_out: Path, out: Path, reference_cap: float, keep: bool) -> dict:
    """Run `command` again with a larger budget (`reference_cap` GiB as cap and --max_memory; 0: no cap and no
    --max_memory, whole layers where they fit the host) and compare the two checkpoints file by file: the
    pieces a layer is cut into must not change what is written."""
    at = command.index("--max_memory")
    reference = command[:at] + command[at + 2:]
    if reference_cap:
        reference[at:at] = ["--max_memory", f"{int(reference_cap * 1024)}MiB"]
    reference[reference.index("--save_path") + 1] = str(out)
    shutil.rmtree(out, ignore_errors=True)
    load = os.getloadavg()[0]
    result = run_capped(reference, int((reference_cap or 64) * GIB), log=out.parent / f"{out.name}.log")
    row = {"reference_cap_gib": reference_cap, "reference_returncode": result.returncode,
           "reference_peak_rss_gib": result.peak_rss / GIB, "reference_wall_s": result.seconds,
           "reference_load_before": load}
    if result.returncode == 0:
        row["identical"] = checkpoint_digest(out) == checkpoint_digest(capped_out)
    else:
        print(result.stderr[-3000:], file=sys.stderr)
    if not keep:
        shutil.rmtree(out, ignore_errors=True)
    return row


def print_table(rows: list[dict]) -> None:
    print(f"\nload average now {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores "
          "(other processes share the machine: wall times scale with it)")
    print("\ncase scheme            cap    rc  peak RSS  baseline  piece plan/measured  wall     cpu      I/O floor  fwd floor  load")
    for r in rows:
        plan = f"{r.get('piece_plan_gib', 0):.2f}/{r.get('piece_measured_gib', 0):.2f} GiB"
        print(f"({r['case']})  {r['scheme']:<17} {r['cap_gib']:>4.1f}G {r['returncode']:>3}  {r['peak_rss_gib']:6.2f}G  "
              f"{r.get('baseline_gib', 0):6.2f}G  {plan:>19}  {r['wall_s']:7.1f}s {r['cpu_s']:7.1f}s "
              f"{r.get('io_floor_s', 0):8.1f}s  {r.get('forward_floor_s', 0):8.1f}s  {r['load_before']:.1f}")
        if r.get("forward_floor_s"):
            print(f"      calibration (units, incl. their weight I/O) {r['calibration_s']:.1f}s = "
                  f"{r['calibration_s'] / r['forward_floor_s']:.1f}x one float forward over the calibration tokens; "
                  f"wall {r['wall_s'] / r['forward_floor_s']:.1f}x")
        if r.get("baseline_gib") is not None and "pieces" in r:
            print(f"      plan: baseline {r['baseline_gib']:.2f}G + largest piece {r['piece_plan_gib']:.2f}G = "
                  f"{r['baseline_gib'] + r['piece_plan_gib']:.2f}G vs measured peak {r['peak_rss_gib']:.2f}G")
            for name, f in sorted(r["pieces"].items(), key=lambda item: -item[1]["plan_gib"]):
                ratio = f"{f['plan_gib'] / f['measured_gib']:.2f}x" if f["measured_gib"] else "-"
                print(f"        piece {name} (x{f['count']}): plan {f['plan_gib']:.2f}G, measured "
                      f"{f['measured_gib']:.2f}G above what was held at its start (plan/measured {ratio})")
        if "reference_returncode" in r:
            budget = f"{r['reference_cap_gib']:.1f} GiB cap and budget" if r["reference_cap_gib"] else "no cap"
            print(f"      reference run ({budget}): rc {r['reference_returncode']}, peak RSS "
                  f"{r['reference_peak_rss_gib']:.2f}G, wall {r['reference_wall_s']:.1f}s (load "
                  f"{r['reference_load_before']:.1f}); checkpoint identical to the capped run: {r.get('identical')}")
        # On a busy host the run waits for a core: its CPU time bounds what the same work takes on a quiet one.
        busy = min(1.0, r["cpu_s"] / r["wall_s"]) if r["wall_s"] else 1.0
        for name, seconds in r.get("projected_s", {}).items():
            print(f"      projected {name}: {seconds / 3600:.2f} h on this machine at this load; "
                  f"<= {seconds * busy / 3600:.2f} h quiet (scaled by this run's CPU/wall {busy:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["a", "b", "all"], default="all")
    parser.add_argument("--layers", type=int, default=4, help="case (a): decoder layers")
    parser.add_argument("--experts", type=int, default=64, help="case (b): routed experts of the MoE layer")
    parser.add_argument("--dense_layers", type=int, default=1, help="case (b): dense layers before the MoE layer")
    parser.add_argument("--vocab", type=int, default=0, help="vocabulary size (0: the model's real one); a smaller "
                        "one shrinks the embeddings, which calibrated runs hold in float32 while capturing inputs")
    parser.add_argument("--cap", type=float, default=4.0, help="memory cap in GiB (cgroup) and --max_memory")
    parser.add_argument("--schemes", nargs="+", default=["w8a8_dynamic"], choices=sorted(SCHEMES) + sorted(PROCESSES))
    parser.add_argument("--samples", type=int, default=8, help="calibration samples for calibrated schemes")
    parser.add_argument("--workdir", type=Path, default=None, help="keeps built checkpoints between runs")
    parser.add_argument("--keep", action="store_true", help="keep the quantized outputs")
    parser.add_argument("--identity", action="store_true",
                        help="also run each scheme with a larger budget (--reference_cap) and compare the checkpoints")
    parser.add_argument("--reference_cap", type=float, default=0.0,
                        help="GiB of cap and --max_memory for the --identity run (0: uncapped, whole layers where "
                        "they fit the host); on a shared host keep it below what the others leave free")
    parser.add_argument("--json", type=Path, default=None, help="also write the table's rows to this JSON file")
    args = parser.parse_args()
    tokenizer_vocab = len(json.loads((REPO / "examples" / "qwen2-demo" / "tokenizer.json").read_text())["model"]["vocab"])
    if args.vocab and args.vocab < tokenizer_vocab:  # calibration token ids would index past the embedding table
        parser.error(f"--vocab {args.vocab} is below the {tokenizer_vocab} token ids of the tokenizer the checkpoints "
                     f"ship (examples/qwen2-demo); use --vocab {tokenizer_vocab} or more")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="modelslim-bench-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for case in (["a", "b"] if args.case == "all" else [args.case]):
            rows += run_case(args, case, work)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
