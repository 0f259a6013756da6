"""The save window: a finished run must not fail because its hidden work file vanished, and earlier output
(eval reports included) goes before a new run writes."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from modelslim_core.io.safetensors_stream import ShardedSafetensorsWriter
from modelslim_save_ascend.output_dir import EVAL_PLOT_NAME, EVAL_REPORT_NAME, clear_previous_output


def test_writer_survives_its_work_file_being_removed(tmp_path: Path) -> None:
    """What a second run clearing the same save_path did: `.quant_model_weights-00001.data.partial` removed
    while the first run was still writing. The payload is read back through the open handle, so the save
    completes with every tensor."""
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4, dtype=torch.int8)}
    writer = ShardedSafetensorsWriter(tmp_path, "quant_model_weights", 0)
    writer.write("a", tensors["a"])
    clear_previous_output(tmp_path, "quant_model_weights", "quant_model_description.json")  # the other run
    assert not list(tmp_path.glob(".*.partial"))
    writer.write("b", tensors["b"])
    writer.close()
    loaded = load_file(tmp_path / "quant_model_weights.safetensors")
    assert set(loaded) == {"a", "b"} and all(torch.equal(loaded[k], v) for k, v in tensors.items())


def test_resumed_writer_reads_back_through_its_handle(tmp_path: Path) -> None:
    writer = ShardedSafetensorsWriter(tmp_path, "w", 0)
    writer.write("a", torch.full((3,), 2.0))
    snapshot = writer.snapshot()
    writer.write("lost", torch.zeros(5))  # after the snapshot: a killed run's tail, truncated on resume
    resumed = ShardedSafetensorsWriter.resume(tmp_path, "w", 0, snapshot)
    resumed.write("b", torch.full((2,), 7, dtype=torch.int32))
    resumed.close()
    loaded = load_file(tmp_path / "w.safetensors")
    assert set(loaded) == {"a", "b"} and loaded["b"].tolist() == [7, 7]


def test_stale_eval_files_go_with_the_earlier_checkpoint(tmp_path: Path) -> None:
    for name in (EVAL_REPORT_NAME, EVAL_PLOT_NAME, "quant_model_description.json", "quant_model_weights.safetensors"):
        (tmp_path / name).write_text("old", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("the user's", encoding="utf-8")
    clear_previous_output(tmp_path, "quant_model_weights", "quant_model_description.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
