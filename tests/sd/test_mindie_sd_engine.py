"""MindIE-SD 3.1.0's own `quantize()` on mindie_format_saver output of both shipped Wan2.1 practices: it
accepts the files (permissions, names) and replaces every described layer; a group-readable copy is refused
by MindIE-SD, which is why every output file is 0o640."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.sd._helpers import DYNAMIC_PRACTICE, STATIC_PRACTICE, practice_config, quantize

pytest.importorskip("modelslim.engines.mindie_sd")
if importlib_util := __import__("importlib.util").util.find_spec("mindiesd") is None:
    pytest.skip("the engines dependency group (uv sync --locked on Linux x86_64) provides mindiesd",
                allow_module_level=True)

from modelslim.engines.conformance import check_saved  # noqa: E402


@pytest.fixture(scope="module")
def outputs(tiny_wan: Path, tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("mindie-engine")
    previous = os.umask(0o022)  # the usual umask would give 0o644 files
    try:
        return {name: quantize(tiny_wan, tmp / name, practice_config(practice))
                for name, practice in (("static", STATIC_PRACTICE), ("dynamic", DYNAMIC_PRACTICE))}
    finally:
        os.umask(previous)


@pytest.mark.parametrize("name", ["static", "dynamic"])
def test_mindie_sd_quantize_loads_every_layer(outputs, name):
    assert [str(p) for p in check_saved(outputs[name])] == []


def test_a_group_readable_checkpoint_is_refused_by_mindie_sd(outputs, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(outputs["dynamic"], copy)
    weights = next(copy.glob("quant_model_weight_*.safetensors"))
    os.chmod(weights, 0o644)
    found = [str(p) for p in check_saved(copy)]
    assert len(found) == 1 and "mindiesd.quantize() fails" in found[0], found
