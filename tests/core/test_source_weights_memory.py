"""Reading source tensors leaves nothing resident once they are dropped (models/weights.py): the budget counts a
piece's weights while it holds them, so pages mapped beyond that would be memory nobody plans for."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from modelslim_core.models.weights import SourceWeights

MIB = 2**20


def _resident_file_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssFile:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no RssFile in /proc/self/status")


@pytest.mark.skipif(sys.platform != "linux", reason="reads the kernel's per-process RSS split (/proc/self/status)")
def test_reading_rows_and_whole_tensors_leaves_no_pages_resident(tmp_path: Path) -> None:
    save_file({f"w{i}": torch.ones(2048, 4096, dtype=torch.bfloat16) * i for i in range(3)},
              str(tmp_path / "model.safetensors"))
    source = SourceWeights(tmp_path)
    before = _resident_file_bytes()
    for name in ("w0", "w1", "w2"):
        value = source.read(name)
        assert float(value[-1, -1]) == float(name[1:])  # every page touched
        for start in range(0, 2048, 512):
            assert float(source.read_rows(name, start, start + 512).float().sum()) == float(name[1:]) * 512 * 4096
        del value
    # 3 x 16 MiB were mapped and touched; what stays is page-granular noise, not a tensor.
    assert _resident_file_bytes() - before < 4 * MIB
