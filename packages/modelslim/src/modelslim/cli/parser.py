"""Argument parsing for `msmodelslim`: the reference's quick-quantization flags plus what users expect
(examples in every `-h`, `--version`, `--log_file`, either spelling of a flag, "did you mean").

Only light modules are imported here: a wrong flag or path must be reported before torch is loaded.
"""

from __future__ import annotations

import argparse
import re
import sys

from modelslim_core.errors import UsageError
from modelslim_core.quant_types import QUANT_TYPES

from modelslim.app.check import add_check_parser
from modelslim.cli.examples import EXAMPLES, TOP_EXAMPLES
from modelslim.cli.spelling import did_you_mean


class CliParser(argparse.ArgumentParser):
    """argparse with errors raised as UsageError (one paragraph, exit 2) and a suggestion for a mistyped command."""

    def error(self, message: str) -> None:  # type: ignore[override]
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            message += did_you_mean(choice[1], re.findall(r"'([^']*)'", choice[2]))
        self.print_usage(sys.stderr)
        command = self.prog.removeprefix("msmodelslim").strip()
        raise UsageError(f"{command}: {message}" if command else message, f"`{self.prog} -h` lists every option, with examples.")


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
        raise argparse.ArgumentTypeError(
            f"invalid choice {text!r} (choose from {', '.join(QUANT_TYPES)}).{did_you_mean(lowered, QUANT_TYPES)} "
            "`msmodelslim list quant-types` says what each one does."
        )
    return lowered


_SIZE_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
               "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


def parse_memory_size(text: str) -> int:
    """A memory size in bytes: a number with an optional unit (4GiB, 4G, 3500MiB, 4.5GB; G/M/K mean GiB/MiB/KiB)."""
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"expected a size such as 4GiB or 3500MiB, got {text!r}")
    value = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return value


def _add_quant(subparsers: argparse._SubParsersAction) -> None:
    quant = subparsers.add_parser(
        "quant",
        help="quantize a model with a best practice (--quant_type) or a YAML config (--config_path)",
        description="Quantize a local Hugging Face model directory and write an ascendv1 checkpoint.",
    )
    quant.add_argument("--model_path", required=True, help="local model directory (config.json, weights, tokenizer)")
    quant.add_argument("--save_path", required=True, help="output directory (created if missing)")
    quant.add_argument("--model_type", type=parse_model_type,
                       help="model name, e.g. Qwen2.5-7B-Instruct (case-sensitive); required unless --config_path is a "
                            "modelslim_convert config")
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
    quant.add_argument("--max_memory", type=parse_memory_size, default=None,
                       help="host memory the run may use, e.g. 4GiB or 3500MiB: layers are processed in pieces that "
                       "fit, and a piece that cannot fit stops the run with a message before the system runs out")
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
    evaluate.add_argument("--dataset", help="held-out texts (short name in calib/ or a path); default: the model's own "
                          "held-out set when the repository ships one (the demo LM: demo_heldout.jsonl), else "
                          "heldout_eval.jsonl")
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


def _add_list(subparsers: argparse._SubParsersAction) -> None:
    listing = subparsers.add_parser(
        "list",
        help="list model types, best practices or quant types, one line each",
        description="List what `msmodelslim quant` can be given: the model types with a dedicated adapter (others "
        "use the generic one), the shipped and plugin best practices, and the quant types with what each does.",
    )
    listing.add_argument("what", nargs="?", choices=("model-types", "practices", "quant-types"),
                         help="one of model-types, practices, quant-types (default: all three)")


def _finish(parser: argparse.ArgumentParser) -> None:
    """What every subcommand gets: its examples under -h and --log_file."""
    for name, sub in parser._subparsers._group_actions[0].choices.items():  # type: ignore[union-attr]
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        if name in EXAMPLES:
            sub.epilog = "examples:\n" + EXAMPLES[name]
        if "--log_file" not in sub._option_string_actions:
            sub.add_argument("--log_file", help="also write the log (at DEBUG level) and any failure to this file")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"msmodelslim {version('modelslim')}"
    except PackageNotFoundError:
        return "msmodelslim (version unknown: not installed as a package)"


def build_parser() -> argparse.ArgumentParser:
    parser = CliParser(
        prog="msmodelslim",
        description="ModelSlim: post-training quantization for LLMs and multimodal models.",
        epilog="examples:\n" + TOP_EXAMPLES + "\nFlags may be spelled with - or _ (--model-path = --model_path).\n"
        "Environment: MSMODELSLIM_LOG_LEVEL=INFO|DEBUG, MSMODELSLIM_CUSTOM_PRACTICE_REPO=<dir>.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    subparsers = parser.add_subparsers(dest="command", metavar="{quant,eval,check,convert-config,list,analyze,tune}",
                                       parser_class=CliParser)
    _add_quant(subparsers)
    _add_eval(subparsers)
    _add_convert_config(subparsers)
    _add_list(subparsers)
    from modelslim.cli import analyze_command, tune_command  # noqa: PLC0415 - they import this module's argument types

    analyze_command.add_analyze(subparsers)
    tune_command.add_tune(subparsers)
    add_check_parser(subparsers)
    _finish(parser)
    return parser
