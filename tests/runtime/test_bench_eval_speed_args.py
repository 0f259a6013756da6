"""tools/bench_eval_speed.py refuses a bad --run before it loads or times anything."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools import bench_eval_speed

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("argv", "needle"), [
    (["--run", "/nonexistent", "Llama", "calib/heldout_eval.jsonl", "w8a8"], "is not a checkpoint directory"),
    (["--run", str(REPO / "examples/qwen2-demo"), "Qwen2-demo", "nofile.jsonl", "w8a8"], "is not a file"),
    (["--run", str(REPO / "examples/qwen2-demo"), "Qwen2-demo", str(REPO / "calib/demo_heldout.jsonl"), "w9a9"],
     "unknown scheme(s) w9a9"),
    (["--schemes", "w8a8,bogus"], "unknown scheme(s) bogus"),
], ids=["path", "dataset", "run-scheme", "scheme"])
def test_bad_runs_are_refused_before_any_work(argv: list[str], needle: str, monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["bench_eval_speed.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        bench_eval_speed.main()
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert needle in captured.err and "Traceback" not in captured.err
    assert "threads, load average" not in captured.out  # nothing started
