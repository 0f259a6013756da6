"""Tests of the streaming safetensors writer: format fidelity, shard boundaries, naming and cleanup."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from modelslim_core.errors import SaveError
from modelslim_core.io.safetensors_stream import ShardedSafetensorsWriter


def _tensors() -> dict[str, torch.Tensor]:
    """One tensor per interesting dtype, plus a 0-dim and an empty one, in deliberately unsorted order."""
    return {
        "z.int8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "y.float32": torch.tensor([[1.5, -2.0], [float("inf"), 3.25]]),
        "x.bfloat16": torch.tensor([1.0, -0.5, 3.0e38], dtype=torch.bfloat16),
        "w.float16": torch.tensor([65504.0, -1.0], dtype=torch.float16),
        "v.int32": torch.tensor([2**31 - 1, -(2**31)], dtype=torch.int32),
        "u.int64": torch.tensor([2**62, -1], dtype=torch.int64),
        "t.uint8": torch.tensor([0, 255], dtype=torch.uint8),
        "s.bool": torch.tensor([True, False, True]),
        "r.fp8": torch.tensor([448.0, -0.5, 0.0], dtype=torch.float8_e4m3fn),
        "q.scalar": torch.tensor(7.0),
        "p.empty": torch.zeros(0, 4, dtype=torch.bfloat16),
    }


def _assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Bytewise equality, because `torch.equal` is not defined for fp8 and treats NaN as unequal."""
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    assert torch.equal(actual.reshape(-1).view(torch.uint8), expected.reshape(-1).view(torch.uint8))


def _files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def _write_all(writer: ShardedSafetensorsWriter, tensors: dict[str, torch.Tensor]) -> dict[str, str]:
    for name, tensor in tensors.items():
        writer.write(name, tensor)
    return writer.close()


def _uint8(nbytes: int, fill: int) -> torch.Tensor:
    return torch.full((nbytes,), fill, dtype=torch.uint8)


# --- single file ------------------------------------------------------------------------------------------


def test_single_file_round_trips_every_dtype(tmp_path: Path) -> None:
    tensors = _tensors()
    weight_map = _write_all(ShardedSafetensorsWriter(tmp_path, "quant_model_weight", 0), tensors)

    assert _files(tmp_path) == ["quant_model_weight.safetensors"]  # no index, no leftovers
    assert weight_map == {name: "quant_model_weight.safetensors" for name in tensors}
    assert list(weight_map) == list(tensors)
    loaded = load_file(tmp_path / "quant_model_weight.safetensors")
    assert set(loaded) == set(tensors)
    for name, tensor in tensors.items():
        _assert_same(loaded[name], tensor)


def test_single_file_is_byte_identical_to_save_file(tmp_path: Path) -> None:
    # save_file sorts tensors (dtype order, then name); the writer lays shards out the same way, so even the
    # unsorted input order gives the same bytes.
    tensors = _tensors()
    _write_all(ShardedSafetensorsWriter(tmp_path, "mine", 0), tensors)
    save_file(tensors, tmp_path / "reference.safetensors")
    assert (tmp_path / "mine.safetensors").read_bytes() == (tmp_path / "reference.safetensors").read_bytes()


def test_single_file_layout_is_hand_checked(tmp_path: Path) -> None:
    # Written int8 first, but the f32 goes first in the file so that it is 4-byte aligned.
    _write_all(
        ShardedSafetensorsWriter(tmp_path, "m", 0),
        {"b": torch.tensor([1, 2, 3], dtype=torch.int8), "a": torch.tensor(1.0)},
    )
    header = (
        b'{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},'
        b'"b":{"dtype":"I8","shape":[3],"data_offsets":[4,7]}}'
    )  # 105 bytes, padded with 7 spaces to 112
    expected = (112).to_bytes(8, "little") + header + b" " * 7 + b"\x00\x00\x80\x3f" + b"\x01\x02\x03"
    assert (tmp_path / "m.safetensors").read_bytes() == expected


def test_empty_single_file_is_valid(tmp_path: Path) -> None:
    assert ShardedSafetensorsWriter(tmp_path, "m", 0).close() == {}
    assert (tmp_path / "m.safetensors").read_bytes() == (8).to_bytes(8, "little") + b"{}" + b" " * 6
    assert load_file(tmp_path / "m.safetensors") == {}


def test_non_contiguous_and_shared_storage_tensors(tmp_path: Path) -> None:
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    param = torch.nn.Parameter(torch.ones(2))  # requires_grad: must be detached, not rejected
    tensors = {"base": base, "transposed": base.t(), "row": base[1], "param": param}
    _write_all(ShardedSafetensorsWriter(tmp_path, "m", 0), tensors)
    loaded = load_file(tmp_path / "m.safetensors")
    _assert_same(loaded["base"], base)
    _assert_same(loaded["transposed"], base.t().contiguous())
    _assert_same(loaded["row"], torch.tensor([3.0, 4.0, 5.0]))
    _assert_same(loaded["param"], torch.ones(2))


def test_meta_tensor_is_skipped_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        weight_map = _write_all(
            ShardedSafetensorsWriter(tmp_path, "m", 0),
            {"real": torch.ones(2), "ghost": torch.empty(3, device="meta")},
        )
    assert weight_map == {"real": "m.safetensors"}
    assert list(load_file(tmp_path / "m.safetensors")) == ["real"]
    assert "ghost" in caplog.text and "meta" in caplog.text


# --- sharding ---------------------------------------------------------------------------------------------


def test_shard_boundaries_names_and_index(tmp_path: Path) -> None:
    # limit 100: 40 -> shard 1 (40); 40 -> 80 < 100, shard 1; 30 -> 110 >= 100, shard 2;
    # 100 -> 130, shard 3 (exactly the limit: no warning); 10 -> 110, shard 4.
    tensors = {f"t{i}": _uint8(size, i) for i, size in enumerate([40, 40, 30, 100, 10])}
    weight_map = _write_all(ShardedSafetensorsWriter(tmp_path, "model", 1, limit_bytes=100), tensors)

    shard = [f"model-0000{i}-of-00004.safetensors" for i in range(1, 5)]
    expected_map = {"t0": shard[0], "t1": shard[0], "t2": shard[1], "t3": shard[2], "t4": shard[3]}
    assert weight_map == expected_map
    assert _files(tmp_path) == sorted([*shard, "model.safetensors.index.json"])

    index_text = (tmp_path / "model.safetensors.index.json").read_text()
    assert json.loads(index_text) == {"metadata": {"total_size": 220}, "weight_map": expected_map}
    assert list(json.loads(index_text)["weight_map"]) == ["t0", "t1", "t2", "t3", "t4"]
    assert index_text.startswith('{\n  "metadata": {\n    "total_size": 220\n  },')  # indent=2

    assert sorted(load_file(tmp_path / shard[0])) == ["t0", "t1"]
    for name, file in expected_map.items():
        _assert_same(load_file(tmp_path / file)[name], tensors[name])


@pytest.mark.parametrize(("sizes", "expected_shards"), [([60, 40], 2), ([60, 39], 1), ([0, 100, 0], 3)])
def test_shard_limit_is_reached_inclusively(tmp_path: Path, sizes: list[int], expected_shards: int) -> None:
    # [0, 100, 0]: the empty tensor makes shard 1 non-empty, 0 + 100 >= 100 starts shard 2, 100 + 0 shard 3.
    tensors = {f"t{i}": _uint8(size, 1) for i, size in enumerate(sizes)}
    weight_map = _write_all(ShardedSafetensorsWriter(tmp_path, "m", 1, limit_bytes=100), tensors)
    assert len(set(weight_map.values())) == expected_shards
    assert f"m-00001-of-0000{expected_shards}.safetensors" in weight_map.values()


def test_oversize_tensor_sits_alone_with_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    tensors = {"small": _uint8(10, 1), "huge": _uint8(150, 2), "after": _uint8(10, 3)}
    with caplog.at_level(logging.WARNING):
        weight_map = _write_all(ShardedSafetensorsWriter(tmp_path, "m", 1, limit_bytes=100), tensors)
    assert weight_map == {
        "small": "m-00001-of-00003.safetensors",
        "huge": "m-00002-of-00003.safetensors",
        "after": "m-00003-of-00003.safetensors",
    }
    assert "'huge'" in caplog.text and "150" in caplog.text
    assert "'small'" not in caplog.text


def test_single_shard_still_gets_numbered_name_and_index(tmp_path: Path) -> None:
    weight_map = _write_all(ShardedSafetensorsWriter(tmp_path, "m", 4), {"a": torch.ones(3), "b": torch.zeros(2)})
    assert weight_map == {"a": "m-00001-of-00001.safetensors", "b": "m-00001-of-00001.safetensors"}
    assert _files(tmp_path) == ["m-00001-of-00001.safetensors", "m.safetensors.index.json"]
    index = json.loads((tmp_path / "m.safetensors.index.json").read_text())
    assert index["metadata"] == {"total_size": 20}


def test_only_partial_names_exist_before_close(tmp_path: Path) -> None:
    writer = ShardedSafetensorsWriter(tmp_path, "m", 1, limit_bytes=100)
    for i, size in enumerate([60, 60, 60]):  # two shards complete, the third still streaming
        writer.write(f"t{i}", _uint8(size, i))
    in_progress = _files(tmp_path)
    assert len(in_progress) == 3
    assert all(name.startswith(".") and name.endswith(".partial") for name in in_progress)
    writer.close()
    assert _files(tmp_path) == [*(f"m-0000{i}-of-00003.safetensors" for i in (1, 2, 3)), "m.safetensors.index.json"]


# --- cleanup and errors -----------------------------------------------------------------------------------


def test_abort_removes_everything(tmp_path: Path) -> None:
    writer = ShardedSafetensorsWriter(tmp_path, "m", 1, limit_bytes=100)
    for i in range(3):
        writer.write(f"t{i}", _uint8(60, i))
    assert _files(tmp_path)
    writer.abort()
    assert _files(tmp_path) == []


def test_abort_after_close_undoes_the_save(tmp_path: Path) -> None:
    writer = ShardedSafetensorsWriter(tmp_path, "m", 1, limit_bytes=100)
    _write_all(writer, {"a": _uint8(60, 1), "b": _uint8(60, 2)})
    assert len(_files(tmp_path)) == 3
    writer.abort()
    assert _files(tmp_path) == []


def test_exception_inside_with_leaves_no_files(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with ShardedSafetensorsWriter(tmp_path, "m", 1, limit_bytes=100) as writer:
            writer.write("a", _uint8(60, 1))
            writer.write("b", _uint8(60, 2))
            raise RuntimeError("boom")
    assert _files(tmp_path) == []


def test_with_block_closes_on_success(tmp_path: Path) -> None:
    with ShardedSafetensorsWriter(tmp_path, "m", 0) as writer:
        writer.write("a", torch.ones(2))
    assert _files(tmp_path) == ["m.safetensors"]
    with pytest.raises(ValueError, match="closed"):
        writer.write("b", torch.ones(2))


def test_duplicate_name_is_a_programming_error(tmp_path: Path) -> None:
    writer = ShardedSafetensorsWriter(tmp_path, "m", 0)
    writer.write("a", torch.ones(2))
    with pytest.raises(ValueError, match="'a' was already written"):
        writer.write("a", torch.zeros(2))
    writer.abort()


def test_unsupported_dtype_is_rejected(tmp_path: Path) -> None:
    writer = ShardedSafetensorsWriter(tmp_path, "m", 0)
    with pytest.raises(ValueError, match="complex64"):
        writer.write("c", torch.zeros(2, dtype=torch.complex64))
    writer.abort()


def test_missing_directory_is_a_save_error(tmp_path: Path) -> None:
    with pytest.raises(SaveError, match="does not exist"):
        ShardedSafetensorsWriter(tmp_path / "nope", "m", 0)


def test_os_failure_becomes_save_error_and_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = ShardedSafetensorsWriter(tmp_path, "m", 1, limit_bytes=100)
    writer.write("a", _uint8(60, 1))
    writer.write("b", _uint8(60, 2))

    def failing_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(SaveError, match="No space left on device"):
        writer.close()
    assert _files(tmp_path) == []
