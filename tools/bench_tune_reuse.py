"""What the unit cache saves a `msmodelslim tune` round on the demo LM: round time with and without reuse.

A tune round rolls units back to float and quantizes again; with the unit cache (modelslim_runners/
unit_cache.py) the units before the first unit the rollback changes are taken from the previous round
instead of being calibrated and quantized again. For each scheme this tool quantizes the demo LM once with
nothing rolled back (filling the cache), then, for each layer L, a round that rolls back
`model.layers.L.mlp.down_proj`: once with the cache, once without it (in that order, one process, one host
load). It prints wall and CPU seconds of every round (process CPU time is the honest figure on a shared
host) and checks that both rounds wrote the same checkpoint bytes.

Schemes: `w4a4` (examples/tune-demo.yaml's template: dynamic per-token activations, minmax weights,
data-free) and `w8a8_gptq` (smooth_quant, static per-tensor activations, GPTQ weights: everything calibrated).

    uv run python tools/bench_tune_reuse.py [--schemes w4a4,w8a8_gptq] [--layers 0,1,2,3]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "qwen2-demo"
TUNE_FILE = REPO / "examples" / "tune-demo.yaml"


def scheme_config(name: str) -> dict:
    template = yaml.safe_load(TUNE_FILE.read_text(encoding="utf-8"))["strategy"]["template"]
    if name == "w4a4":
        return template
    config = copy.deepcopy(template)
    config["spec"]["process"] = [
        {"type": "smooth_quant", "alpha": 0.5},
        {"type": "linear_quant", "include": ["*"], "qconfig": {
            "act": {"scope": "per_tensor", "dtype": "int8", "symmetric": False, "method": "minmax"},
            "weight": {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "gptq"}}}]
    return config


def quantize(config: dict, out: Path, cache: Path | None) -> tuple[float, float]:
    """(wall, CPU) seconds of one `msmodelslim quant` run with the config, with or without the unit cache."""
    from modelslim.app.quick_quant import QuantArgs, run_quant
    from modelslim_runners.unit_cache import CACHE_ENV

    if cache is None:
        os.environ.pop(CACHE_ENV, None)
    else:
        os.environ[CACHE_ENV] = str(cache)
    config_file = out.with_suffix(".yaml")
    config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    wall, cpu = time.perf_counter(), time.process_time()
    run_quant(QuantArgs(str(DEMO), str(out), "Qwen2-demo", config_path=str(config_file), device="cpu", yes=True))
    return time.perf_counter() - wall, time.process_time() - cpu


def rolled_back(config: dict, layer: int) -> dict:
    config = copy.deepcopy(config)
    quantizer = next(item for item in config["spec"]["process"] if item["type"] == "linear_quant")
    quantizer["exclude"] = [f"*model.layers.{layer}.mlp.down_proj*"]
    return config


def same_bytes(a: Path, b: Path) -> bool:
    """The weights (one file or shards, with the index) and the description are byte-identical."""
    names = sorted(p.name for p in a.iterdir() if p.name.startswith("quant_model_"))
    return names == sorted(p.name for p in b.iterdir() if p.name.startswith("quant_model_")) and all(
        (a / name).read_bytes() == (b / name).read_bytes() for name in names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemes", default="w4a4,w8a8_gptq")
    parser.add_argument("--layers", default="0,1,2,3", help="layers whose down_proj a round rolls back")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"demo LM (4 layers), load average {load[0]:.1f} at start, {os.environ.get('OMP_NUM_THREADS', 'default')} threads")
    print("| scheme | round | wall s (reuse) | CPU s (reuse) | wall s (scratch) | CPU s (scratch) | CPU ratio | same bytes |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in [s for s in args.schemes.split(",") if s]:
            work = Path(tmp) / scheme
            work.mkdir()
            cache = work / "unit_cache"
            config = scheme_config(scheme)
            wall, cpu = quantize(config, work / "none", cache)
            print(f"| {scheme} | nothing rolled back (fills the cache) | | | {wall:.1f} | {cpu:.1f} | | |")
            for layer in [int(x) for x in args.layers.split(",") if x]:
                round_config = rolled_back(config, layer)
                reuse = quantize(round_config, work / f"reuse{layer}", cache)
                scratch = quantize(round_config, work / f"scratch{layer}", None)
                print(f"| {scheme} | layer {layer} down_proj float | {reuse[0]:.1f} | {reuse[1]:.1f} | {scratch[0]:.1f} | "
                      f"{scratch[1]:.1f} | {reuse[1] / scratch[1]:.2f} | "
                      f"{same_bytes(work / f'reuse{layer}', work / f'scratch{layer}')} |")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    sys.exit(main())
