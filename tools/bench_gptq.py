"""GPTQ cost on realistic layer shapes: seconds per decoder layer and peak memory, through the real pipeline.

A randomly initialised Llama-architecture model (default: TinyLlama-1.1B's layer shapes — hidden 2048,
intermediate 5632, 32 heads, 4 KV heads — with 4 layers and a small vocabulary) is quantized in memory
by `linear_quant` with int8 per-token activations and GPTQ int4 per-channel weights (W4A8_DYNAMIC) on
random token sequences (default 64 × 512). Nothing is downloaded or saved. The unit pipeline runs as in
a real `msmodelslim quant` (layer_wise placement, one calibration forward per layer that accumulates the
Hessians, GPTQ in postprocess, the rerun of the layer for the next layer's inputs).

Printed: seconds per layer split into forwards, Hessian accumulation and the GPTQ solve; peak RSS; and,
for layer 0, the output error tr(ΔW·H·ΔWᵀ)/tr(W·H·Wᵀ) of GPTQ against minmax on the calibration inputs.

Usage (from the repository root):
    .venv/bin/python tools/bench_gptq.py [--layers 4] [--samples 64] [--seq_len 512] [--group_size 0] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from modelslim_core.models.base import ModelAdapter
from modelslim_core.processors.linear_quant import LinearQuantConfig
from modelslim_core.quant import gptq
from modelslim_core.quant.minmax import MinMaxIntWeight
from modelslim_core.runtime.context import DeviceSpec, RunContext
from modelslim_core.runtime.runner import Stage
from modelslim_runners.pipeline import UnitPipeline
from modelslim_runners.placement import LayerWisePlacement


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


class SyntheticAdapter(ModelAdapter):
    """The generic adapter, with an in-memory random model and random token ids instead of files."""

    def __init__(self, model_path: Path, model: nn.Module, samples: int, seq_len: int, vocab: int):
        super().__init__("synthetic", model_path)
        self.model = model
        generator = torch.Generator().manual_seed(0)
        self.samples = [{"input_ids": torch.randint(0, vocab, (1, seq_len), generator=generator)} for _ in range(samples)]

    def load_model(self, dtype: torch.dtype) -> nn.Module:
        return self.model

    def tokenize(self, texts: list[str]) -> list[dict[str, torch.Tensor]]:
        return self.samples


class Timings:
    """Wall time of the Hessian updates and GPTQ solves, and layer 0's Hessians for the error comparison."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.layer0: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def install(self) -> None:
        update, solve = gptq.HessianAccumulator.update, gptq.gptq_quantize

        def timed_update(accumulator, x, key=None):
            started = time.perf_counter()
            update(accumulator, x, key)
            self.seconds["hessian"] += time.perf_counter() - started

        def timed_solve(weight, hessian, *args, name="weight", **kwargs):
            # copies first: the pipeline hands both over to be overwritten (overwrite_weight / overwrite_hessian)
            inputs = (weight.detach().clone(), hessian.clone()) if name.startswith("model.layers.0.") else None
            started = time.perf_counter()
            result = solve(weight, hessian, *args, name=name, **kwargs)
            self.seconds["gptq"] += time.perf_counter() - started
            if inputs is not None:
                self.layer0[name] = (*inputs, result.dequantize())
            return result

        gptq.HessianAccumulator.update = timed_update
        gptq.gptq_quantize = timed_solve


class UnitClock(logging.Handler):
    """Per-unit seconds from the pipeline's 'done (i/n, elapsed, ETA)' records (elapsed is cumulative)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.per_unit: list[tuple[str, float]] = []
        self._elapsed = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "%s done (%d/%d, %.1f s elapsed, ETA %.1f s).":
            name, elapsed = record.args[0], record.args[3]
            self.per_unit.append((name, elapsed - self._elapsed))
            self._elapsed = elapsed


def output_error(weight: torch.Tensor, hessian: torch.Tensor, quantized: torch.Tensor) -> float:
    delta = quantized - weight
    return (torch.trace(delta @ hessian @ delta.T) / torch.trace(weight @ hessian @ weight.T)).item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv_heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--seq_len", type=int, default=512)
    parser.add_argument("--group_size", type=int, default=0, help="0 = per channel")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = 1024
    config = LlamaConfig(vocab_size=vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                         max_position_embeddings=max(args.seq_len, 64), tie_word_embeddings=False)
    torch.manual_seed(0)
    started = time.perf_counter()
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    print(f"model: {args.layers} layers, hidden {args.hidden}, intermediate {args.intermediate}, "
          f"{sum(p.numel() for p in model.parameters()) / 1e6:.0f} M params (built in {time.perf_counter() - started:.1f} s); "
          f"{args.samples} samples x {args.seq_len} tokens; torch threads {torch.get_num_threads()}")
    rss_model = peak_rss_gib()

    weight = {"scope": "per_group" if args.group_size else "per_channel", "dtype": "int4", "symmetric": True, "method": "gptq"}
    if args.group_size:
        weight["ext"] = {"group_size": args.group_size}
    processor = LinearQuantConfig.model_validate({
        "type": "linear_quant",
        "qconfig": {"act": {"scope": "per_token", "dtype": "int8", "symmetric": True, "method": "minmax"}, "weight": weight},
    })
    timings, clock = Timings(), UnitClock()
    timings.install()
    pipeline_logger = logging.getLogger("modelslim_runners.pipeline")
    pipeline_logger.setLevel(logging.DEBUG)
    pipeline_logger.addHandler(clock)
    with tempfile.TemporaryDirectory() as tmp:
        config.save_pretrained(tmp)
        adapter = SyntheticAdapter(Path(tmp), model, args.samples, args.seq_len, vocab)
        context = RunContext(adapter, Path(tmp), Path(tmp) / "unused", DeviceSpec("cpu"), torch.float32)
        started = time.perf_counter()
        UnitPipeline(context, LayerWisePlacement(context)).run(
            [Stage("bench", [processor], [], "mix_calib.jsonl")]
        )
        total = time.perf_counter() - started

    per_layer = [seconds for _, seconds in clock.per_unit]
    other = total - sum(per_layer)
    print(f"total {total:.1f} s: capture of layer-0 inputs etc. {other:.1f} s, layers {sum(per_layer):.1f} s")
    for name, seconds in clock.per_unit:
        print(f"  {name}: {seconds:.1f} s")
    mean = sum(per_layer) / len(per_layer)
    print(f"seconds per layer: {mean:.1f} (Hessian accumulation {timings.seconds['hessian'] / len(per_layer):.1f}, "
          f"GPTQ solve {timings.seconds['gptq'] / len(per_layer):.1f}, forwards and the rest "
          f"{mean - (timings.seconds['hessian'] + timings.seconds['gptq']) / len(per_layer):.1f})")
    print(f"peak RSS: {peak_rss_gib():.2f} GiB (after building the model: {rss_model:.2f} GiB)")
    minmax = MinMaxIntWeight(processor.qconfig.weight)
    print("layer 0 output error tr(dW H dW^T)/tr(W H W^T) on the calibration inputs, minmax -> GPTQ:")
    for name, (w, h, quantized) in timings.layer0.items():
        baseline = output_error(w, h, minmax.quantize(w).dequantize())
        print(f"  {name.removeprefix('model.layers.0.')}: {baseline:.5f} -> {output_error(w, h, quantized):.5f}")


if __name__ == "__main__":
    sys.exit(main())
