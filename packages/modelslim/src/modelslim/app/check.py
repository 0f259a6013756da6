"""`msmodelslim check SAVE_DIR [--engine ...]`: would the serving engine load this checkpoint?

The same conformance check as tests/engines, with the engine installed in this environment: vLLM-Ascend's
own quantization config and schemes, or MindIE-SD's own `quantize()` (modelslim.engines). On a host
without the NPU stack, vLLM / torch_npu are stood in for while the loaders are imported; on an Ascend
host nothing is replaced. One line per problem; a non-zero exit when anything would fail to load.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from modelslim_core.errors import CheckpointError, UsageError

ENGINE_PACKAGES = {"vllm-ascend": "vllm_ascend", "vllm-ascend-310p": "vllm_ascend", "mindie-sd": "mindiesd"}


class CheckFailed(CheckpointError):
    kind = "check failed"


def add_check_parser(subparsers: argparse._SubParsersAction) -> None:
    check = subparsers.add_parser(
        "check",
        help="check that a serving engine loads a saved checkpoint (vLLM-Ascend, MindIE-SD)",
        description="Run the serving engine's own quantization loader over a saved checkpoint: every tensor must be "
        "what the engine allocates (name, dtype, shape after its fusion), every global it reads present, nothing "
        "extra. Default engine: MindIE-SD for mindie_format_saver output, else vLLM-Ascend.",
        epilog="example: msmodelslim check out/w8a8 --engine vllm-ascend",
    )
    check.add_argument("save_dirs", nargs="+", metavar="SAVE_DIR", help="--save_path of a finished quant run")
    check.add_argument("--engine", choices=sorted(ENGINE_PACKAGES), help="the engine to check against")


def _require_engine(engine: str) -> None:
    package = ENGINE_PACKAGES[engine]
    if importlib.util.find_spec(package) is None:
        raise UsageError(f"--engine {engine}: the {package} package is not installed in this environment.",
                         f"install it (`pip install {package.replace('_', '-')}`, or `uv sync` in a ModelSlim "
                         "checkout), then run the check again.")


def run_check(save_dirs: list[str], engine: str | None) -> list[str]:
    """Check every directory; returns the problem lines (empty: all load). Prints one line per finding."""
    from modelslim.engines.checkpoint import EngineCheckpoint, NotACheckpoint  # noqa: PLC0415
    from modelslim.engines.conformance import ENGINES, default_engine  # noqa: PLC0415

    failures: list[str] = []
    for save_dir in save_dirs:
        try:
            checkpoint = EngineCheckpoint.open(Path(save_dir))
        except NotACheckpoint as exc:
            raise CheckpointError(f"{save_dir}: not a quantized checkpoint ({exc}).",
                                  "pass the --save_path of a finished `msmodelslim quant` run.") from None
        chosen = engine or default_engine(checkpoint)
        _require_engine(chosen)
        module, platform = ENGINES[chosen]
        problems = module.check(checkpoint, platform) if platform else module.check(checkpoint)
        for problem in problems:
            line = f"{save_dir}: {problem}"
            print(line, flush=True)
            failures.append(line)
        if not problems:
            print(f"{save_dir}: loads in {chosen}", flush=True)
    return failures


def check_command(args: argparse.Namespace) -> None:
    failures = run_check(args.save_dirs, args.engine)
    if failures:
        raise CheckFailed(f"{len(failures)} problem(s): the engine would not load the checkpoint as written "
                          "(listed above).", "re-quantize with a scheme the engine loads; docs/formats.md lists them.")
