"""Confirming a fallback practice: silent on an exact verified hit, `--yes` to accept without a terminal,
a clear stop (not a hang, not a crash) when nobody can answer, and a y/N prompt on a terminal.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from modelslim.app.confirm import Confirmer
from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.errors import AbortedError
from tests.cli._helpers import assert_clean_failure, run_inprocess, run_subprocess

DESCRIPTION = "quant_model_description.json"
TIP = "the quant type changed from w4a4c8 to w8a8"


class FakeTerminal(io.StringIO):
    """A stdin that claims to be a terminal and holds the user's typed answer."""

    def isatty(self) -> bool:
        return True


def no_terminal() -> Confirmer:
    """What the app builds without --yes when stdin is not a terminal (pytest's stdin is not one)."""
    return Confirmer(assume_yes=False, stdin=io.StringIO(""), stderr=io.StringIO())


# --- through the app and the CLI -------------------------------------------------------------------------------


def test_exact_verified_model_and_quant_type_runs_without_asking(tiny_models, tmp_path: Path):
    asked: list[str] = []
    save = tmp_path / "out"
    args = QuantArgs(model_path=str(tiny_models("qwen2")), save_path=str(save), model_type="Qwen2-demo",
                     quant_type="w8a16", device="cpu")
    assert run_quant(args, confirm=asked.append) == save.resolve()
    assert asked == []
    description = json.loads((save / DESCRIPTION).read_text())
    assert description["model_quant_type"] == "W8A16"


def test_fallback_without_terminal_or_yes_stops_in_a_real_process(tiny_models, tmp_path: Path):
    save = tmp_path / "out"
    args = ["--model_path", str(tiny_models("qwen2")), "--save_path", str(save), "--model_type", "Qwen2-demo",
            "--quant_type", "w4a4c8", "--device", "cpu"]
    result = run_subprocess(args, cwd=tmp_path)  # stdin is /dev/null: not a terminal
    assert_clean_failure(result, 1, "aborted", "confirmation needed", TIP, "--yes")
    assert not (save / DESCRIPTION).exists()
    assert not save.exists()


def test_unknown_model_type_without_terminal_or_yes_is_aborted_before_writing(tiny_models, tmp_path: Path):
    save = tmp_path / "out"
    args = QuantArgs(model_path=str(tiny_models("qwen2")), save_path=str(save), model_type="MyModel-1B",
                     quant_type="w8a8", device="cpu")
    with pytest.raises(AbortedError, match="confirmation needed") as caught:
        run_quant(args, confirm=no_terminal())
    assert "default w8a8 practice" in caught.value.message
    assert "--yes" in (caught.value.hint or "")
    assert not save.exists()


def test_fallback_with_yes_runs_and_logs_the_tip(tiny_models, tmp_path: Path, capsys, cli_env):
    # An unknown model type asking for w4a8 falls back twice (w4a8 -> w8a8, own pedigree -> default practice);
    # the default w8a8 practice is data-free, which keeps this end-to-end run fast.
    save = tmp_path / "out"
    args = ["--model_path", str(tiny_models("qwen2")), "--save_path", str(save), "--model_type", "MyModel-1B",
            "--quant_type", "w4a8", "--device", "cpu", "--yes"]
    result = run_inprocess(args, capsys)
    assert result.code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if " - WARNING - " in line]
    expected = ("quant type changed from w4a8 to w8a8", "default w8a8 practice", "accepted by --yes")
    assert any(all(part in line for part in expected) for line in warnings), result.stderr
    description = json.loads((save / DESCRIPTION).read_text())
    assert description["model_quant_type"] == "W8A8_DYNAMIC"


# --- the Confirmer itself ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["y\n", "yes\n", " Y \n", "YES\n"])
def test_terminal_answer_yes_accepts_and_shows_the_prompt(answer: str):
    stderr = io.StringIO()
    Confirmer(assume_yes=False, stdin=FakeTerminal(answer), stderr=stderr)("quant type changed to w8a8.")
    prompt = stderr.getvalue()
    assert "quant type changed to w8a8." in prompt
    assert "Continue? [y/N]" in prompt


@pytest.mark.parametrize("answer", ["n\n", "\n", "", "no\n", "yep\n"])
def test_terminal_answer_other_than_yes_refuses(answer: str):
    stderr = io.StringIO()
    with pytest.raises(AbortedError, match="not confirmed"):
        Confirmer(assume_yes=False, stdin=FakeTerminal(answer), stderr=stderr)("quant type changed to w8a8.")
    assert "quant type changed to w8a8." in stderr.getvalue()


def test_no_terminal_without_yes_refuses_without_reading_or_prompting():
    stdin, stderr = io.StringIO("y\n"), io.StringIO()
    with pytest.raises(AbortedError, match="confirmation needed: default practice used") as caught:
        Confirmer(assume_yes=False, stdin=stdin, stderr=stderr)("default practice used.")
    assert "--yes" in caught.value.hint
    assert stdin.tell() == 0  # a piped "y" is not taken as consent
    assert stderr.getvalue() == ""


def test_yes_accepts_without_prompting_and_logs_the_tip(caplog: pytest.LogCaptureFixture):
    stderr = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="modelslim.app.confirm"):
        Confirmer(assume_yes=True, stdin=FakeTerminal("n\n"), stderr=stderr)("default practice used.")
    assert stderr.getvalue() == ""
    assert [r.getMessage() for r in caplog.records] == ["default practice used. (accepted by --yes)"]
