"""`msmodelslim tune` on the demo LM: the analysis order against random rollback orders.

Goal (issue "analyze and tune"): with a tight target, tune reaches it with fewer rolled-back units than
rolling back in random order. The scheme is examples/tune-demo.yaml's W4A4 minmax template (it costs the
demo LM ~5% held-out perplexity); the judge is the built-in perplexity evaluator on demo_heldout.jsonl.
The first run orders candidates by `analyze`'s float_gain ranking (linear scope); the others roll back the
same units shuffled with fixed seeds. Prints every run's rounds (units rolled back, perplexity ratio,
pass/fail, seconds) and a summary line per run.

    uv run python tools/bench_tune.py [--target 1.015] [--seeds 3] [--max_samples 16]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "examples" / "qwen2-demo"
TUNE_FILE = REPO / "examples" / "tune-demo.yaml"


def run(save: Path, document: dict) -> dict:
    from modelslim.app.tune import TuneArgs, run_tune

    config = save.parent / f"{save.name}.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return run_tune(TuneArgs(str(DEMO), str(save), str(config), "cpu", "Qwen2-demo"))


def show(name: str, report: dict, seconds: float) -> None:
    print(f"\n{name}: rolled back {len(report['rolled_back'])} unit(s) in {len(report['rounds'])} rounds, {seconds:.0f} s")
    print("| round | rolled back | ratio | result | seconds |\n|---|---|---|---|---|")
    for r in report["rounds"]:
        print(f"| {r['round']} | {len(r['rolled_back'])} | {r['metric']:.5f} | {'pass' if r['passed'] else 'fail'} | {r['seconds']} |")
    print(f"rolled back: {', '.join(report['rolled_back']) or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", type=float, default=1.015, help="max quantized/float perplexity ratio")
    parser.add_argument("--seeds", type=int, default=3, help="random orders to compare with")
    parser.add_argument("--max_samples", type=int, default=16, help="held-out samples the judge reads")
    args = parser.parse_args()
    document = yaml.safe_load(TUNE_FILE.read_text(encoding="utf-8"))
    document["evaluation"].update(max_ratio=args.target, max_samples=args.max_samples)
    counts = {}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        ranked = run(Path(tmp) / "analysis", document)
        show("analysis order", ranked, time.perf_counter() - started)
        counts["analysis order"] = len(ranked["rolled_back"])
        units = yaml.safe_load((Path(tmp) / "analysis" / "history" / "history.yaml").read_text())["candidates"]
        units = next(iter(units.values()))
        for seed in range(1, args.seeds + 1):
            order = units[:]
            random.Random(seed).shuffle(order)
            shuffled = {**document, "strategy": {**document["strategy"], "rollback_candidates": order}}
            started = time.perf_counter()
            report = run(Path(tmp) / f"random{seed}", shuffled)
            show(f"random order (seed {seed})", report, time.perf_counter() - started)
            counts[f"random {seed}"] = len(report["rolled_back"])
    print(f"\ntarget ratio {args.target} on {args.max_samples} samples of demo_heldout.jsonl; units rolled back: "
          + ", ".join(f"{name} {count}" for name, count in counts.items()))


if __name__ == "__main__":
    sys.exit(main())
