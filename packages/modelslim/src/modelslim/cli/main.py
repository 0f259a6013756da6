"""`msmodelslim`: parse arguments, run the application, turn failures into one clear paragraph.

Exit codes: 0 success, 2 usage errors, 1 every other failure. Tracebacks only with
MSMODELSLIM_LOG_LEVEL=debug.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from modelslim_core.errors import ModelSlimError

from modelslim.cli import logging_setup
from modelslim.app.check import check_command
from modelslim.cli.parser import build_parser

logger = logging.getLogger("modelslim")


def _report(exc: BaseException) -> int:
    if isinstance(exc, ModelSlimError):
        hint = f" Hint: {exc.hint}" if exc.hint else ""
        print(f"msmodelslim: {exc.kind}: {exc.message}{hint}", file=sys.stderr)
        if logging_setup.debug_tracebacks():
            traceback.print_exception(exc)
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        print("msmodelslim: interrupted; the output directory holds no complete checkpoint.", file=sys.stderr)
        return 130
    print(
        f"msmodelslim: internal error: {type(exc).__name__}: {exc}. This is a bug in ModelSlim; please report it "
        "with the output of the same command run with MSMODELSLIM_LOG_LEVEL=debug.",
        file=sys.stderr,
    )
    if logging_setup.debug_tracebacks():
        traceback.print_exception(exc)
    return 1


def _quant(args) -> None:
    from modelslim.app.quick_quant import QuantArgs, run_quant

    run_quant(QuantArgs.from_namespace(args))


def _eval(args) -> None:
    from modelslim.app.eval_report import format_table
    from modelslim.app.evaluate import EvalArgs, run_eval

    report = run_eval(EvalArgs(args.model_path, args.quant_path, args.dataset, args.device, args.max_samples))
    print(format_table(report))


def _convert_config(args) -> None:
    from modelslim.app.convert_config import convert_config

    print(convert_config(args.config), end="")


COMMANDS = {"quant": _quant, "eval": _eval, "convert-config": _convert_config, "check": check_command}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach a model hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    parser = build_parser()
    try:
        level = logging_setup.env_log_level()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 0
        if getattr(args, "debug", False):
            level = logging.DEBUG
        logging_setup.configure(level)
        COMMANDS[args.command](args)
        return 0
    except SystemExit as exc:  # argparse: -h (0) or usage error (2)
        return exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # noqa: BLE001 - the one place that turns every failure into a message
        return _report(exc)


if __name__ == "__main__":
    sys.exit(main())
