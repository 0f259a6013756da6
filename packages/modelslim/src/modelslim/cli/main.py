"""`msmodelslim`: parse arguments, run the application, turn failures into one clear paragraph.

Exit codes: 0 success, 2 usage errors, 1 every other failure, 130 interrupted (Ctrl-C), 143 terminated.
Tracebacks only with MSMODELSLIM_LOG_LEVEL=debug. Paths and flags are checked before torch and transformers
are imported, so a typo costs a fraction of a second, not the ~10-40 s those imports take.
"""

from __future__ import annotations

import logging
import sys
import traceback

from modelslim_core.errors import ModelSlimError, UsageError

from modelslim.app.check import check_command
from modelslim.cli import analyze_command, environment, logging_setup, process_gc, signals, tune_command
from modelslim.cli.parser import build_parser
from modelslim.cli.spelling import did_you_mean, long_options, normalize, subcommands

logger = logging.getLogger("modelslim")


def _message(exc: BaseException) -> tuple[str, int]:
    if isinstance(exc, ModelSlimError):
        hint = f" Hint: {exc.hint}" if exc.hint else ""
        return f"msmodelslim: {exc.kind}: {exc.message}{hint}", exc.exit_code
    if isinstance(exc, signals.Terminated):
        return "msmodelslim: terminated; the output directory holds no complete checkpoint.", 143
    if isinstance(exc, KeyboardInterrupt):
        return "msmodelslim: interrupted; the output directory holds no complete checkpoint.", 130
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return (f"msmodelslim: I/O error: {exc.strerror or exc}{where}. Hint: check that the path exists, that you "
                "may write there and that the disk has free space."), 1
    return (f"msmodelslim: internal error: {type(exc).__name__}: {exc}. This is a bug in ModelSlim; please report it "
            "with the output of the same command run with MSMODELSLIM_LOG_LEVEL=debug."), 1


def _report(exc: BaseException) -> int:
    text, code = _message(exc)
    print(text, file=sys.stderr)
    logging_setup.to_log_file(text)
    if logging_setup.debug_tracebacks():
        traceback.print_exception(exc)
    return code


def _early_checks(args) -> None:
    """Path checks that need nothing heavy, run before the command imports torch."""
    from modelslim.app.paths import check_config_path, check_model_path, check_quant_path, check_save_path  # noqa: PLC0415

    if args.command == "quant":
        check_save_path(args.save_path, check_model_path(args.model_path))
        if args.config_path:
            check_config_path(args.config_path)
    elif args.command == "eval":
        check_model_path(args.model_path)
        check_quant_path(args.quant_path)


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


def _list(args) -> None:
    from modelslim.app.listing import listing

    print(listing(args.what))


COMMANDS = {"quant": _quant, "eval": _eval, "convert-config": _convert_config, "list": _list,
            "analyze": analyze_command.run, "tune": tune_command.run, "check": check_command}


def _unknown_flag(parser, argv: list[str]) -> None:
    """An unknown `--flag` is named with the closest known one, before argparse complains about anything else."""
    commands = subcommands(parser)
    command = next((token for token in argv if token in commands), None)
    target = commands[command] if command else parser
    known = long_options(target) + long_options(parser)
    for token in argv:
        if token == "--":
            return
        name = token.partition("=")[0]
        if name.startswith("--") and not any(option.startswith(name) for option in known):
            target.print_usage(sys.stderr)
            raise UsageError(f"{'msmodelslim ' + command if command else 'msmodelslim'}: unrecognized argument "
                             f"{name!r}.{did_you_mean(name, known)}",
                             f"`msmodelslim {command + ' ' if command else ''}-h` lists every option, with examples.")


def _parse(parser, argv: list[str]):
    """argparse, with either spelling of a flag accepted and a suggestion for an unknown one."""
    argv = normalize(argv, parser)
    _unknown_flag(parser, argv)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    environment.prepare()
    owns_process = argv is None  # the console script; tests call main(argv) in their own process
    with signals.installed():
        code = _main(list(sys.argv[1:] if argv is None else argv), owns_process)
    if owns_process:
        process_gc.freeze_for_exit()
    return code


def _main(argv: list[str], owns_process: bool = False) -> int:
    parser = build_parser()
    try:
        level = logging_setup.env_log_level()
        args = _parse(parser, argv)
        if args.command is None:
            parser.print_help()
            return 0
        if getattr(args, "debug", False):
            level = logging.DEBUG
        logging_setup.configure(level, getattr(args, "log_file", None))
        _early_checks(args)
        if owns_process:
            process_gc.import_frozen(args.command, getattr(args, "device", None))
        COMMANDS[args.command](args)
        return 0
    except SystemExit as exc:  # argparse: -h / --version (0)
        return exc.code if isinstance(exc.code, int) else 2
    except BaseException as exc:  # noqa: BLE001 - the one place that turns every failure into a message
        return _report(exc)


if __name__ == "__main__":
    sys.exit(main())
