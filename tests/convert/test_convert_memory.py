"""A conversion holds one tensor at a time, and a failed one leaves nothing that looks like a checkpoint."""

from __future__ import annotations

import weakref

import pytest
import torch

from modelslim_core.models.weights import SourceWeights
from modelslim_save_ascend.convert import service
from tests.convert._run import convert, read_all, spec_yaml
from tests.convert.checkpoints import HIDDEN, INTER, VOCAB, float_tensors


def test_at_most_one_source_tensor_is_alive(fp8_source, tmp_path, monkeypatch):
    alive = {"now": 0, "peak": 0, "reads": 0}
    original = SourceWeights.read

    def counting_read(self, name):
        tensor = original(self, name)
        alive["now"] += 1
        alive["reads"] += 1
        alive["peak"] = max(alive["peak"], alive["now"])
        weakref.finalize(tensor, lambda: alive.__setitem__("now", alive["now"] - 1))
        return tensor

    monkeypatch.setattr(SourceWeights, "read", counting_read)
    peaks = []
    original_commit = service.ConvertOutput.commit

    def commit(self, serving_dtype):
        peaks.append(alive["peak"])
        return original_commit(self, serving_dtype)

    monkeypatch.setattr(service.ConvertOutput, "commit", commit)
    convert(fp8_source[0], tmp_path / "out", spec_yaml("linears: [{match: ['*.mlp.*'], target: W8A8_MXFP8}]"))
    assert alive["reads"] == 25  # every tensor of the checkpoint read exactly once
    assert peaks == [1], "each tensor is released before the next is read"


def test_largest_tensor_held_is_reported(fp8_source, tmp_path, caplog):
    caplog.set_level("INFO")
    convert(fp8_source[0], tmp_path / "out", spec_yaml("save: [{type: hf}]"))
    biggest = VOCAB * HIDDEN * 2 / 2**20  # the bf16 embedding table
    assert f"largest tensor held at once: {biggest:.1f} MB" in caplog.text


def test_large_float_tensors_are_streamed_in_row_blocks(fp8_source, tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO")
    monkeypatch.setattr(service.TensorConverter, "stream_bytes", 64 * 2**10)
    out = convert(fp8_source[0], tmp_path / "out", spec_yaml("save: [{type: hf, part_file_size: 0}]"))
    saved = read_all(out)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):  # 256 KB each: four blocks of 64 KB
        assert torch.equal(saved[name], float_tensors()[name])
    # The largest thing held is now a dequantized 384x256 MLP weight in bf16 (192 KB), not the 256 KB table.
    assert f"largest tensor held at once: {INTER * HIDDEN * 2 / 2**20:.1f} MB" in caplog.text


@pytest.mark.parametrize("layout", ["ascendv1", "hf"])
def test_failure_midway_leaves_no_complete_looking_output(fp8_source, tmp_path, monkeypatch, layout):
    out = tmp_path / "out"
    convert(fp8_source[0], out, spec_yaml(f"save: [{{type: {layout}}}]"))  # an earlier, complete output
    calls = {"n": 0}
    original = service.TensorConverter.convert

    def failing(self, tensor):
        calls["n"] += 1
        if calls["n"] == 10:
            raise OSError("disk full")
        return original(self, tensor)

    monkeypatch.setattr(service.TensorConverter, "convert", failing)
    with pytest.raises(OSError):
        convert(fp8_source[0], out, spec_yaml(f"save: [{{type: {layout}}}]"))
    left = sorted(p.name for p in out.iterdir())
    assert not [name for name in left if name.endswith(".safetensors") or name.startswith(".")], left
    marker = "quant_model_description.json" if layout == "ascendv1" else "config.json"  # written last on success
    assert marker not in left, left


def test_failure_in_a_new_save_path_removes_it(fp8_source, tmp_path, monkeypatch):
    monkeypatch.setattr(service.TensorConverter, "convert", lambda self, tensor: (_ for _ in ()).throw(OSError("boom")))
    with pytest.raises(OSError):
        convert(fp8_source[0], tmp_path / "fresh", spec_yaml("save: [{type: hf}]"))
    assert not (tmp_path / "fresh").exists()
