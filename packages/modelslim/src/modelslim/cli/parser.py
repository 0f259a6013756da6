"""Argument parsing for `msmodelslim` (seed: Quick Quantization Guide, "Parameters")."""

from __future__ import annotations

import argparse

from modelslim.app.check import add_check_parser

from modelslim_core.practice import QUANT_TYPES

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def parse_bool(text: str) -> bool:
    """`True`/`False` in any case (and 1/0, yes/no); anything else is a usage error."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_model_type(text: str) -> str:
    """Any non-blank name (kept exactly as typed: lookups are case-sensitive)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty; pass the model's name, e.g. Qwen2.5-7B-Instruct")
    return text


def parse_quant_type(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in QUANT_TYPES:
        raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from {', '.join(QUANT_TYPES)})")
    return lowered


def _add_quant(subparsers: argparse._SubParsersAction) -> None:
    quant = subparsers.add_parser(
        "quant",
        help="quantize a model with a best practice (--quant_type) or a YAML config (--config_path)",
        description="Quantize a local Hugging Face model directory and write an ascendv1 checkpoint.",
    )
    quant.add_argument("--model_path", required=True, help="local model directory (config.json, weights, tokenizer)")
    quant.add_argument("--save_path", required=True, help="output directory (created if missing)")
    quant.add_argument("--model_type", required=True, type=parse_model_type,
                       help="model name, e.g. Qwen2.5-7B-Instruct (case-sensitive)")
    source = quant.add_mutually_exclusive_group()
    source.add_argument("--config_path", help="YAML quantization config; disables the practice lookup and --tag")
    source.add_argument("--quant_type", type=parse_quant_type, help=f"one of: {', '.join(QUANT_TYPES)}")
    quant.add_argument("--device", help="cpu, cuda[:i,j,...] or npu[:i,j,...] (default: npu, else cuda, else cpu)")
    quant.add_argument("--tag", nargs="*", default=None, help="scenario tags, e.g. vLLM-Ascend Atlas_A2_Inference")
    quant.add_argument("--trust_remote_code", type=parse_bool, nargs="?", const=True, default=False,
                       help="allow the model's own Python code to run (true/false; default false)")
    quant.add_argument("--debug", action="store_true",
                       help="verbose DEBUG logging, and save_path/debug_info/ with what the processors computed")
    quant.add_argument("--dry-run", dest="dry_run", action="store_true",
                       help="print the plan (config, runner, scheme of every linear, output, memory) and exit; "
                       "loads no weights and writes nothing")
    quant.add_argument("-y", "--yes", action="store_true",
                       help="accept a fallback practice without asking (needed when stdin is not a terminal)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    evaluate = subparsers.add_parser(
        "eval",
        help="check a saved checkpoint against its float model (per-layer error, perplexity)",
        description="Reload a quantized checkpoint with the Ascend integer semantics and compare it with the float "
        "model: per-layer output error and perplexity (causal LMs) or hidden-state cosine. Writes eval_report.json "
        "and eval_layer_error.png into --quant_path.",
    )
    evaluate.add_argument("--model_path", required=True, help="the float model directory the checkpoint was made from")
    evaluate.add_argument("--quant_path", required=True, help="the --save_path of a finished `msmodelslim quant` run")
    evaluate.add_argument("--dataset", default="heldout_eval.jsonl", help="held-out texts (short name in calib/ or a path)")
    evaluate.add_argument("--device", help="cpu or cuda[:i] (default: as for quant)")
    evaluate.add_argument("--max_samples", type=positive_int, help="use only the first N samples")


def _add_convert_config(subparsers: argparse._SubParsersAction) -> None:
    convert = subparsers.add_parser(
        "convert-config",
        help="print the modelslim_v1 translation of a deprecated modelslim_v0 YAML config",
        description="Translate a modelslim_v0 config (anti-outlier method, calibration settings, disabled layers) "
        "into the equivalent modelslim_v1 config and print it as YAML; fields without an equivalent are refused.",
    )
    convert.add_argument("config", help="the modelslim_v0 YAML file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msmodelslim",
        description="ModelSlim: post-training quantization for LLMs and multimodal models.",
        epilog="Environment: MSMODELSLIM_LOG_LEVEL=INFO|DEBUG, MSMODELSLIM_CUSTOM_PRACTICE_REPO=<dir>.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="{quant,eval,check,convert-config}")
    _add_quant(subparsers)
    _add_eval(subparsers)
    _add_convert_config(subparsers)
    add_check_parser(subparsers)
    return parser
