"""Calibration against one float forward over the same tokens, phase by phase, in one process.

Goal (issue "scale", developers' guide): calibration of minmax and smoothing practices <= 1.5x one float
forward over the calibration tokens. This tool measures, in CPU seconds of this process (user + sys, so the
figures hold on a shared host; run it with OMP_NUM_THREADS=1 there, as idle OpenMP threads spin and count):

- `float forward`: transformers' float32 model over the calibration samples one by one, as calibration feeds
  them (best of two passes), whole model and decoder layers only (first layer's input to last layer's output);
- `floor`: the same float forward timed up to each layer's last linear (what a smoothing statistics pass must
  compute) plus every layer but the last in full (the calibration pass whose outputs feed the next layer), a
  lower bound for a smoothing practice whose checkpoint must not change (see `LayerClock`);
- then `msmodelslim quant` in the same process (`run_quant`), split into the runner's phases: capturing the
  first unit's inputs, the statistics-only forwards (`forward_until`: smoothing), the full forwards whose
  outputs feed the next unit (calibration of static activations), and everything a unit does in total.

    OMP_NUM_THREADS=1 uv run python tools/bench_calibration.py --model_path examples/qwen2-demo \\
        --model_type Qwen2-demo --quant_type w8a8
    OMP_NUM_THREADS=1 uv run python tools/bench_calibration.py --model_path <llama> \\
        --model_type Llama-3.1-8B-Instruct --config_path my.yaml --dataset my.jsonl
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import resource
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class PhaseClock:
    """CPU seconds spent inside wrapped callables, per phase name."""

    def __init__(self):
        self.seconds: dict[str, float] = collections.defaultdict(float)

    def wrap(self, name: str, function: Callable) -> Callable:
        """`function` timed under `name` (the runner's forwards hand their outputs to the activation spill,
        which consumes them before returning, so the timing covers the whole forward)."""
        def timed(*args, **kwargs):
            started = cpu_seconds()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += cpu_seconds() - started

        return timed


class LayerClock:
    """CPU seconds inside each decoder layer of a float forward, and inside its part before its last linear.

    Why the second figure: a statistics-only pass (smoothing) must run each layer up to the input of the last
    linear it smooths into (`down_proj` for the up->down subgraph), on the layer as it was before smoothing,
    while the calibration pass runs the smoothed layer with its quantized weights to the end (its outputs feed
    the next layer). The statistics depend bit for bit on the first, the ranges and the next layer's inputs on
    the second, so a run that keeps its checkpoint cannot share work between them: the prefix is that floor."""

    def __init__(self, layers: torch.nn.ModuleList):
        self.whole = [0.0] * len(layers)
        self.prefix = [0.0] * len(layers)
        self._started = 0.0
        self.handles = []
        for index, layer in enumerate(layers):
            last = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)][-1]
            self.handles += [layer.register_forward_pre_hook(self._start),
                             last.register_forward_pre_hook(self._stamp(self.prefix, index)),
                             layer.register_forward_hook(self._stamp(self.whole, index))]

    def _start(self, *_ignored) -> None:
        self._started = cpu_seconds()

    def _stamp(self, totals: list[float], index: int) -> Callable:
        def stamp(*_ignored) -> None:
            totals[index] += cpu_seconds() - self._started

        return stamp

    def reset(self) -> None:
        for totals in (self.whole, self.prefix):  # in place: the hooks hold these lists
            totals[:] = [0.0] * len(totals)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def float_forward(model_path: str, texts: list[str]) -> tuple[float, float, float, int]:
    """(whole-model CPU s, decoder-layers CPU s, two-pass floor CPU s, tokens) of the float32 model over
    `texts`, best of two. The floor is a statistics pass up to each layer's last linear plus a full pass of
    every layer but the last (whose outputs feed nothing): what smoothing practices cannot go below."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    limit = json.loads((Path(model_path) / "config.json").read_text()).get("max_position_embeddings")
    options = {"truncation": True, "max_length": limit} if limit else {}
    samples = [tokenizer(text, return_tensors="pt", **options) for text in texts]
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, local_files_only=True).eval()
    clock = LayerClock(model.model.layers)
    best = None
    with torch.no_grad():
        for _ in range(2):
            clock.reset()
            started = cpu_seconds()
            for sample in samples:
                model(**sample, use_cache=False)
            run = (cpu_seconds() - started, sum(clock.whole), sum(clock.prefix) + sum(clock.whole[:-1]))
            best = run if best is None or run < best else best
    clock.remove()
    return *best, sum(int(sample["input_ids"].numel()) for sample in samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_path", required=True)
    parser.add_argument("--model_type", required=True)
    parser.add_argument("--quant_type", default=None)
    parser.add_argument("--config_path", default=None)
    parser.add_argument("--dataset", default="mix_calib.jsonl",
                        help="the calibration texts the float forward runs (the config's own dataset calibrates)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from modelslim.app.quick_quant import QuantArgs, run_quant
    from modelslim_core.calib.text import load_texts
    from modelslim_runners import pipeline

    whole, decoder, floor, tokens = float_forward(args.model_path, load_texts(args.dataset))
    clock = PhaseClock()
    runner = pipeline.UnitPipeline
    runner._capture = clock.wrap("capture first unit's inputs", runner._capture)
    runner._forward_until = clock.wrap("statistics-only forwards (smoothing)", runner._forward_until)
    runner._forward = clock.wrap("full forwards (calibration, next unit's inputs)", runner._forward)
    runner._run_unit = clock.wrap("units in total", runner._run_unit)
    with tempfile.TemporaryDirectory() as tmp:
        started = cpu_seconds()
        run_quant(QuantArgs(args.model_path, str(Path(tmp) / "out"), args.model_type, quant_type=args.quant_type,
                            config_path=args.config_path, device="cpu", yes=True))
        total = cpu_seconds() - started
    calibration = clock.seconds["units in total"] + clock.seconds["capture first unit's inputs"]
    print(f"\n{args.model_path}, {args.quant_type or args.config_path}: {tokens} calibration tokens; "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; CPU seconds\n")
    print("| phase | CPU s | x decoder float forward |")
    print("|---|---|---|")
    print(f"| float forward, whole model | {whole:.2f} | {whole / decoder:.2f} |")
    print(f"| float forward, decoder layers | {decoder:.2f} | 1.00 |")
    print(f"| floor of statistics + calibration passes (each layer to its last linear, then every layer but "
          f"the last in full) | {floor:.2f} | {floor / decoder:.2f} |")
    for name, seconds in clock.seconds.items():
        print(f"| {name} | {seconds:.2f} | {seconds / decoder:.2f} |")
    print(f"| calibration (capture + units) | {calibration:.2f} | {calibration / decoder:.2f} "
          f"({calibration / whole:.2f}x the whole model's forward, {calibration / floor:.2f}x the two-pass floor) |")
    print(f"| run_quant in total (load, calibrate, save) | {total:.2f} | {total / decoder:.2f} |")


if __name__ == "__main__":
    main()
