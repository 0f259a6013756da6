"""Benchmark: `modelslim_convert` on a real-dimension DeepSeek-V3-geometry FP8-block checkpoint.

Builds (once, tensor by tensor) 2 decoder layers of DeepSeek-V3's geometry (hidden 7168, MLA, one dense MLP of
18432, one MoE layer of `--experts` experts of 2048) with its full 129280-token embedding and lm_head, stored
the way the release is: every linear except lm_head and the router in float8_e4m3fn with 128x128
`weight_scale_inv` blocks. Then converts it with `msmodelslim quant --config_path` (MoE experts to
W8A8_MXFP8, everything else dequantized to bf16) under a memory cap, and prints time, throughput and peak RSS
against the import-only baseline and the largest tensor, which is what "one tensor at a time" promises.

    uv run python tools/bench_convert.py --work /tmp/bench-convert [--experts 8] [--cap_gib 3]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools.capped_run import GIB, run_capped  # noqa: E402

# This process stays small (no torch): a forked child's peak RSS counts the parent's pages until it execs.

BLOCK = 128
CONFIG = """apiversion: modelslim_convert
spec:
  linears:
    - {match: ['*.mlp.experts.*'], target: W8A8_MXFP8, route: [FP8_BLOCK, FLOAT, W8A8_MXFP8]}
  save: [{type: ascendv1, part_file_size: 4}]
"""


def _fp8_blocks(weight):
    import torch

    rows, cols = weight.shape
    pad = torch.nn.functional.pad(weight.float(), (0, -cols % BLOCK, 0, -rows % BLOCK))
    blocks = pad.reshape(pad.shape[0] // BLOCK, BLOCK, pad.shape[1] // BLOCK, BLOCK)
    scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / 448
    values = (blocks / scale[:, None, :, None]).reshape(pad.shape)[:rows, :cols].to(torch.float8_e4m3fn)
    return values, scale


def _quantized_in_release(name: str, shape: tuple[int, ...]) -> bool:
    return (len(shape) == 2 and name.endswith(".weight") and "embed" not in name and not name.startswith("lm_head")
            and not name.endswith("mlp.gate.weight"))


def build_fp8_checkpoint(path: Path, experts: int) -> int:
    import torch

    from modelslim_core.io.safetensors_stream import ShardedSafetensorsWriter
    from modelslim_core.models.resolve import create_adapter
    from tools.scale_checkpoints import _BLOCK, _fill, deepseek_v3_config

    path.mkdir(parents=True, exist_ok=True)
    config = deepseek_v3_config(experts)
    config.save_pretrained(path)
    skeleton = create_adapter("DeepSeek-V3", path, False).build_skeleton(torch.bfloat16)
    noise = (torch.randn(_BLOCK, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    total = 0
    with ShardedSafetensorsWriter(path, "model", 0, limit_bytes=4 * GIB) as writer:
        for seed, (name, param) in enumerate(skeleton.named_parameters()):
            tensor = _fill(tuple(param.shape), name, seed, noise)
            if _quantized_in_release(name, tuple(param.shape)):
                values, scale = _fp8_blocks(tensor)
                writer.write(name, values)
                writer.write(name.replace(".weight", ".weight_scale_inv"), scale)
                total += values.numel() + scale.numel() * 4
            else:
                writer.write(name, tensor)
                total += tensor.numel() * tensor.element_size()
            del tensor
    config_json = json.loads((path / "config.json").read_text())
    config_json.update(torch_dtype="bfloat16", quantization_config={
        "quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [BLOCK, BLOCK]})
    (path / "config.json").write_text(json.dumps(config_json, indent=2))
    return total


def largest_bf16_tensors(path: Path) -> tuple[tuple[str, int], tuple[str, int]]:
    """(name, bf16 bytes) of the largest tensor, and of the largest FP8 one (dequantized whole by the run;
    large float tensors are copied in row blocks instead)."""
    from safetensors import safe_open

    largest, converted = ("", 0), ("", 0)
    for file in path.glob("*.safetensors"):
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():
                piece = handle.get_slice(name)
                entry = (name, math.prod(piece.get_shape()) * 2)
                largest = max(largest, entry, key=lambda item: item[1])
                if piece.get_dtype() == "F8_E4M3":
                    converted = max(converted, entry, key=lambda item: item[1])
    return largest, converted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True, help="scratch directory (source and output)")
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--cap_gib", type=float, default=3.0, help="memory cap of the conversion process")
    parser.add_argument("--keep", action="store_true", help="keep the output checkpoint")
    parser.add_argument("--build_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    source = args.work / f"dsv3-fp8-{args.experts}e"
    if args.build_only:
        build_fp8_checkpoint(source, args.experts)
        return
    if not (source / "config.json").is_file():
        print(f"building {source} ...", flush=True)
        subprocess.run([sys.executable, __file__, "--work", str(args.work), "--experts", str(args.experts),
                        "--build_only"], check=True)
    source_bytes = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    config = args.work / "convert.yaml"
    config.write_text(CONFIG)
    out = args.work / "out"
    shutil.rmtree(out, ignore_errors=True)
    cap = int(args.cap_gib * GIB)
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MSMODELSLIM_LOG_LEVEL": "info", "PATH": "/usr/bin:/bin"}
    baseline = run_capped([sys.executable, "-c", "import modelslim.cli.main, modelslim_save_ascend.convert.service"],
                          cap, env)
    run = run_capped([sys.executable, "-m", "modelslim.cli.main", "quant", "--model_path", str(source), "--save_path",
                      str(out), "--config_path", str(config), "--device", "cpu"], cap, env)
    if run.returncode != 0:
        print(run.stderr[-3000:])
        raise SystemExit(f"conversion failed (exit {run.returncode}, OOM killed: {run.oom_killed})")
    out_bytes = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    (name, largest), (fp8_name, converted) = largest_bf16_tensors(source)
    description = json.loads((out / "quant_model_description.json").read_text())
    tags = {tag: sum(1 for v in description.values() if v == tag) for tag in ("W8A8_MXFP8", "FLOAT")}
    above = run.peak_rss - baseline.peak_rss
    print(f"source: {source_bytes / GIB:.2f} GiB FP8-block ({args.experts} experts); output: {out_bytes / GIB:.2f} GiB "
          f"ascendv1 ({tags['W8A8_MXFP8']} W8A8_MXFP8 tensors, {tags['FLOAT']} FLOAT)")
    print(f"time: {run.seconds:.1f} s wall, {run.cpu_seconds:.1f} s CPU; {source_bytes / 2**20 / run.seconds:.1f} MiB/s "
          f"of source; I/O read {run.read_bytes / GIB:.2f} GiB, written {run.written_bytes / GIB:.2f} GiB")
    print(f"peak RSS: {run.peak_rss / GIB:.2f} GiB (cap {args.cap_gib:g} GiB); import-only baseline "
          f"{baseline.peak_rss / GIB:.2f} GiB")
    print(f"peak above baseline: {above / GIB:.2f} GiB = {above / largest:.2f} x the largest tensor ({name}, "
          f"{largest / GIB:.2f} GiB as bf16, copied in row blocks) = {above / converted:.2f} x the largest dequantized "
          f"one ({fp8_name}, {converted / GIB:.2f} GiB as bf16) = {above / source_bytes:.3f} x the source")
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
