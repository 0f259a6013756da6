"""Benchmark: layer-wise quantization of a checkpoint larger than the memory it may use.

Builds a random-weight Qwen2-architecture checkpoint of realistic layer shapes (sharded safetensors, one
shard per layer, written layer by layer so building it is memory-bounded too), then runs
`msmodelslim quant` with runner layer_wise in a subprocess while a watchdog samples its RSS and kills it if
it ever exceeds the cap. Prints the checkpoint size, the largest unit, peak RSS, wall time and the target
`peak RSS <= 3 x largest unit + embeddings/head + activations`.

    uv run python tools/bench_layer_wise_memory.py --layers 16 --cap-fraction 0.5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[1]
GIB = 2**30
CONFIG = """\
apiversion: modelslim_v1
spec:
  runner: layer_wise
  process:
    - type: linear_quant
      qconfig:
        act: {{scope: {scope}, dtype: int8, symmetric: {symmetric}, method: minmax}}
        weight: {{scope: per_channel, dtype: int8, symmetric: true, method: minmax}}
  save: [{{type: ascendv1_saver, part_file_size: 2}}]
  dataset: {dataset}
"""


def layer_shapes(hidden: int, inter: int, heads: int, kv_heads: int) -> dict[str, tuple[int, ...]]:
    head_dim = hidden // heads
    return {
        "input_layernorm.weight": (hidden,),
        "post_attention_layernorm.weight": (hidden,),
        "self_attn.q_proj.weight": (hidden, hidden), "self_attn.q_proj.bias": (hidden,),
        "self_attn.k_proj.weight": (kv_heads * head_dim, hidden), "self_attn.k_proj.bias": (kv_heads * head_dim,),
        "self_attn.v_proj.weight": (kv_heads * head_dim, hidden), "self_attn.v_proj.bias": (kv_heads * head_dim,),
        "self_attn.o_proj.weight": (hidden, hidden),
        "mlp.gate_proj.weight": (inter, hidden), "mlp.up_proj.weight": (inter, hidden), "mlp.down_proj.weight": (hidden, inter),
    }


def random_tensors(shapes: dict[str, tuple[int, ...]], prefix: str, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight"):
            out[f"{prefix}{name}"] = torch.ones(shape, dtype=torch.bfloat16)
        else:
            out[f"{prefix}{name}"] = (torch.randn(shape, generator=generator) * 0.02).to(torch.bfloat16)
    return out


def build_checkpoint(path: Path, args: argparse.Namespace) -> int:
    """Write the checkpoint shard by shard; returns its size in bytes."""
    from transformers import Qwen2Config

    path.mkdir(parents=True, exist_ok=True)
    config = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.inter,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                         tie_word_embeddings=False, dtype="bfloat16")
    config.save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (path / name).write_bytes((REPO / "examples" / "qwen2-demo" / name).read_bytes())
    shards = [("model.", {"embed_tokens.weight": (args.vocab, args.hidden), "norm.weight": (args.hidden,)}),
              ("", {"lm_head.weight": (args.vocab, args.hidden)})]
    shards += [(f"model.layers.{i}.", layer_shapes(args.hidden, args.inter, args.heads, args.kv_heads)) for i in range(args.layers)]
    weight_map, total = {}, 0
    for number, (prefix, shapes) in enumerate(shards, start=1):
        file = f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        tensors = random_tensors(shapes, prefix, seed=number)
        save_file(tensors, path / file)
        weight_map.update({name: file for name in tensors})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        del tensors
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return total


def rss(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def run_capped(command: list[str], cap: int) -> tuple[int, int, float, bool]:
    """Run `command`, sampling RSS every 20 ms; kill it above `cap`. Returns (exit code, peak, seconds, killed)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak, killed = 0, False

    def watch() -> None:
        nonlocal peak, killed
        while process.poll() is None:
            peak = max(peak, rss(process.pid))
            if peak > cap:
                killed = True
                process.kill()
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, stderr = process.communicate()
    watcher.join()
    if process.returncode and not killed:
        print(stderr[-3000:], file=sys.stderr)
    return process.returncode, peak, time.perf_counter() - started, killed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--inter", type=int, default=11008)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--cap-fraction", type=float, default=0.5, help="memory cap as a fraction of the checkpoint size")
    parser.add_argument("--static", action="store_true", help="static W8A8 (calibrates on mix_calib.jsonl) instead of data-free dynamic")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="modelslim-bench-"))
    started = time.perf_counter()
    size = build_checkpoint(work / "model", args)
    print(f"checkpoint: {size / GIB:.2f} GiB ({args.layers} layers, hidden {args.hidden}), built in {time.perf_counter() - started:.0f} s")
    unit = sum(torch.Size(s).numel() for s in layer_shapes(args.hidden, args.inter, args.heads, args.kv_heads).values()) * 4
    outside = 2 * args.vocab * args.hidden * 4
    config = work / "config.yaml"
    scope, symmetric = ("per_tensor", "false") if args.static else ("per_token", "true")
    config.write_text(CONFIG.format(scope=scope, symmetric=symmetric, dataset="mix_calib.jsonl"))
    cap = int(size * args.cap_fraction)
    command = [sys.executable, "-m", "modelslim.cli.main", "quant", "--model_path", str(work / "model"),
               "--save_path", str(work / "out"), "--model_type", "Qwen2-bench", "--config_path", str(config), "--device", "cpu"]
    code, peak, seconds, killed = run_capped(command, cap)
    target = 3 * unit + outside
    print(f"largest unit (float32): {unit / GIB:.2f} GiB; embeddings + lm_head (float32): {outside / GIB:.2f} GiB")
    print(f"memory cap: {cap / GIB:.2f} GiB ({args.cap_fraction:.2f} x checkpoint)")
    print(f"peak RSS: {peak / GIB:.2f} GiB = {peak / size:.2f} x checkpoint; target 3 x unit + embeddings = {target / GIB:.2f} GiB "
          f"-> {'met' if peak <= target else 'MISSED'}")
    print(f"wall time: {seconds:.1f} s ({seconds / args.layers:.2f} s/layer); exit code {code}{' (killed at the cap)' if killed else ''}")


if __name__ == "__main__":
    main()
