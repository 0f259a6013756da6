"""`msmodelslim tune`: its arguments and how it runs (registered in cli/parser.py)."""

from __future__ import annotations

import argparse

from modelslim.cli.parser import parse_bool, parse_model_type


def add_tune(subparsers: argparse._SubParsersAction) -> None:
    tune = subparsers.add_parser(
        "tune",
        help="roll sensitive layers back to float until an accuracy target is met",
        description="Search which layers to leave in float (strategy binary_fallback or standing_high) until the "
        "evaluation (built-in perplexity, an OpenAI-compatible service + benchmark, or a plugin) passes. Rounds are "
        "kept in SAVE_PATH/history/ (a rerun resumes); the result is SAVE_PATH/quant_model/, tuned_config.yaml and "
        "tune_report.json.",
    )
    tune.add_argument("--model_path", required=True, help="local float model directory")
    tune.add_argument("--save_path", required=True, help="output directory (history/, quant_model/, reports)")
    tune.add_argument("--config", required=True, help="the tune YAML: strategy and evaluation")
    tune.add_argument("--device", help="cpu, cuda[:i] or npu[:i] (default: as for quant)")
    tune.add_argument("--model_type", type=parse_model_type, default="default", help="model name (default: default)")
    tune.add_argument("--timeout", type=parse_timeout, help="time budget, e.g. 2H, 1D, 3D4H, 90M (default: none)")
    tune.add_argument("--trust_remote_code", type=parse_bool, nargs="?", const=True, default=False,
                      help="allow the model's own Python code to run (true/false; default false)")


def run(args: argparse.Namespace) -> None:
    from modelslim.app.evaluators import build_evaluator
    from modelslim.app.paths import check_model_path, check_save_path
    from modelslim.app.tune_config import load_tune_file

    # the cheap checks first: paths and the whole strategy file, before torch is imported
    check_save_path(args.save_path, check_model_path(args.model_path))
    build_evaluator(load_tune_file(args.config)[1], f"{args.config}: evaluation")
    from modelslim.app.tune import TuneArgs, format_rounds, run_tune

    report = run_tune(TuneArgs(args.model_path, args.save_path, args.config, args.device, args.model_type, args.timeout,
                               args.trust_remote_code))
    print(format_rounds(report))


def parse_timeout(text: str) -> float:
    from modelslim.app.tune_config import parse_duration

    try:
        seconds = parse_duration(text)
        if seconds <= 0:
            raise ValueError(f"must be positive, got {text!r}")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return seconds
