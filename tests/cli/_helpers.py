"""Running `msmodelslim` in tests: in a subprocess (the real process contract) or in-process through `main()`.

Interpreter start-up plus `import torch` costs ~1.5 s per subprocess, so subprocesses are kept for what only
a real process shows (exit status of `python -m modelslim.cli.main`, argparse and environment errors,
stdin that is not a terminal). Everything else calls `modelslim.cli.main.main(argv)`, which is exactly what
the console script runs, with stderr captured by pytest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from modelslim.cli.main import main

LOG_ENV = "MSMODELSLIM_LOG_LEVEL"


@dataclass
class CliResult:
    code: int
    stderr: str

    @property
    def error_line(self) -> str:
        """The final non-empty stderr line: where the one-paragraph failure message must be."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""


def run_subprocess(args: list[str], cwd: Path, env_extra: dict[str, str] | None = None) -> CliResult:
    env = dict(os.environ)
    env.pop(LOG_ENV, None)
    env.update(env_extra or {})
    done = subprocess.run(
        [sys.executable, "-m", "modelslim.cli.main", "quant", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=600,  # an interpreter importing torch can take minutes on a loaded 2-core CI host
    )
    return CliResult(done.returncode, done.stderr)


def run_inprocess(args: list[str], capsys: pytest.CaptureFixture[str]) -> CliResult:
    capsys.readouterr()  # drop anything printed before
    code = main(["quant", *args])
    return CliResult(code, capsys.readouterr().err)


def assert_clean_failure(result: CliResult, exit_code: int, *needles: str) -> None:
    """Exit code, no traceback, and a final `msmodelslim...` line that names every needle."""
    assert result.code == exit_code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    line = result.error_line
    assert line.startswith("msmodelslim"), result.stderr
    for needle in needles:
        assert needle in line, f"{needle!r} not in error line {line!r}"


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (and '<dir>' for every directory) under root."""
    digest: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        digest[rel] = "<dir>" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return digest
