"""The command line explains itself: examples under every -h, --version, `list`, either spelling of a flag,
and "did you mean" for flags, commands and quant types."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelslim.cli.main import main
from modelslim.cli.parser import build_parser
from modelslim.cli.spelling import subcommands
from modelslim_core.quant_types import QUANT_TYPES
from tests.cli._helpers import assert_clean_failure, CliResult

pytestmark = pytest.mark.usefixtures("cli_env")


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("command", [None, *subcommands(build_parser())])
def test_every_help_has_examples(command: str | None, capsys) -> None:
    code, out, _ = run([command, "-h"] if command else ["-h"], capsys)
    assert code == 0
    examples = out.split("examples:\n", 1)[1]
    assert "msmodelslim" in examples


def test_version(capsys) -> None:
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.startswith("msmodelslim 0.")


def test_list_quant_types_one_line_each(capsys) -> None:
    code, out, _ = run(["list", "quant-types"], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and [line.split()[0] for line in lines] == list(QUANT_TYPES)
    assert all(len(line.split()) > 3 for line in lines)  # each one explained


def test_list_model_types_and_practices(capsys) -> None:
    code, out, _ = run(["list", "model-types"], capsys)
    assert code == 0 and "Qwen2.5-7B-Instruct" in out and "default adapter" in out
    code, out, _ = run(["list", "practices"], capsys)
    lines = out.strip().splitlines()
    assert code == 0 and any(line.split()[:2] == ["qwen2", "w8a8"] for line in lines)
    assert all(line.rstrip().endswith((".yaml", ".yml")) for line in lines)
    code, out, _ = run(["list"], capsys)
    assert code == 0 and all(f"{section}:" in out for section in ("model-types", "practices", "quant-types"))


@pytest.mark.parametrize("spelling", ["--model-path", "--model_path", "--Model-Path"])
def test_hyphen_and_underscore_spellings(spelling: str, tmp_path: Path, capsys) -> None:
    code, _, err = run(["quant", spelling, str(tmp_path / "absent"), "--save-path", str(tmp_path / "o"),
                        "--model-type", "Qwen2-demo", "--quant-type", "w8a8", "--dry_run"], capsys)
    assert_clean_failure(CliResult(code, err), 1, "model_path", "does not exist")  # parsed; failed on the path


def test_every_flag_has_both_spellings() -> None:
    from modelslim.cli.spelling import long_options, normalize

    parser = build_parser()
    for name, sub in subcommands(parser).items():
        for option in long_options(sub):
            for other in (option.replace("_", "-"), "--" + option[2:].replace("-", "_")):
                assert normalize([name, other], parser) == [name, option]


@pytest.mark.parametrize(
    ("argv", "needles"),
    [
        (["quant", "--modle_path", "x"], ("unrecognized argument '--modle_path'", "Did you mean --model_path?")),
        (["quant", "--model_path", "m", "--save_path", "s", "--model_type", "X", "--quant_type", "w8a8c"],
         ("invalid choice 'w8a8c'", "Did you mean w8a8c8?")),
        (["quant", "--model_path", "m", "--save_path", "s", "--model_type", "X", "--quant_type", "W8A8_DYNAMIC"],
         ("Did you mean w8a8?", "msmodelslim list quant-types")),
        (["quatn"], ("invalid choice: 'quatn'", "Did you mean quant?")),
        (["eval", "--quant-dir", "x"], ("'--quant-dir'", "Did you mean --quant_path?")),
    ],
)
def test_did_you_mean(argv: list[str], needles: tuple[str, ...], capsys) -> None:
    code, _, err = run(argv, capsys)
    assert_clean_failure(CliResult(code, err), 2, "usage error", *needles)
