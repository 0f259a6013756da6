"""Quantizing tiny models into checkpoints for the engine-conformance tests, and asking the engines about them.

The engines' own loaders come from the `engines` dependency group (vllm-ascend 0.23.0, mindiesd 3.1.0,
installed by `uv sync --locked` without their hardware stacks); `modelslim.engines` stubs vLLM / torch_npu
while it imports them, so nothing here needs an NPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim.engines.conformance import check_saved
from tests.quant_runs import flow

if not all(importlib.util.find_spec(name) for name in ("vllm_ascend", "mindiesd")):  # not importable without stubs
    pytest.skip("the engines dependency group (uv sync --locked on Linux x86_64) provides vllm-ascend and mindiesd",
                allow_module_level=True)


def q(dtype: str, scope: str, symmetric: bool = True, method: str = "minmax", **ext) -> str:
    fields = {"dtype": dtype, "scope": scope, "symmetric": symmetric, "method": method}
    if ext:
        fields["ext"] = flow(ext)
    return flow(fields)


STATIC = q("int8", "per_tensor", False)
TOKEN8 = q("int8", "per_token")
INT8_PC = q("int8", "per_channel")
#: Export tag -> the linear_quant qconfig that produces it.
QCONFIGS = {
    "W8A8": f"{{act: {STATIC}, weight: {INT8_PC}}}",
    "W8A8_MIX": f"{{act: {q('int8', 'pd_mix', False)}, weight: {INT8_PC}}}",
    "W8A8_DYNAMIC": f"{{act: {TOKEN8}, weight: {INT8_PC}}}",
    "W8A16": f"{{weight: {INT8_PC}}}",
    "W8A16_ASYM": f"{{weight: {q('int8', 'per_channel', False)}}}",
    "W4A4_DYNAMIC": f"{{act: {q('int4', 'per_token')}, weight: {q('int4', 'per_channel')}}}",
    "W8A8FP8_DYNAMIC": f"{{act: {q('fp8_e4m3', 'per_token')}, weight: {q('fp8_e4m3', 'per_channel')}}}",
    "W8A8_MXFP8": f"{{act: {q('mxfp8', 'per_block')}, weight: {q('mxfp8', 'per_block')}}}",
    "W4A8_MXFP": f"{{act: {q('mxfp8', 'per_block')}, weight: {q('mxfp4', 'per_block')}}}",
    "W4A4_MXFP4": f"{{act: {q('mxfp4', 'per_block')}, weight: {q('mxfp4', 'per_block')}}}",
    # Variants vLLM-Ascend does not load (refused at YAML load for it; written here for MindIE LLM).
    "W8A8_DYNAMIC_GROUP": f"{{act: {TOKEN8}, weight: {q('int8', 'per_group', True, group_size=32)}}}",
    "W8A16_GROUP": f"{{weight: {q('int8', 'per_group', True, group_size=32)}}}",
    "W4A4_DYNAMIC_GROUP": f"{{act: {q('int4', 'per_token')}, weight: {q('int4', 'per_group', True, group_size=32)}}}",
    "W4A4_DYNAMIC_ASYM": f"{{act: {q('int4', 'per_token')}, weight: {q('int4', 'per_channel', False)}}}",
    "W4A8_DYNAMIC": f"{{act: {TOKEN8}, weight: {q('int4', 'per_channel')}}}",
}
C8_ITEM = f"{{type: dynamic_cache, qconfig: {q('int8', 'per_channel', False)}}}"
FA3_ITEM = "{type: fa3_quant}"


def config_yaml(slots: dict[str, str], dataset: Path, extra_items: tuple[str, ...] = (), saver: str = "ascendv1_saver",
                part_file_size: float = 0) -> str:
    """One group of linear_quant items (pattern -> QCONFIGS key) plus extra process items."""
    items = [f"        - {{type: linear_quant, qconfig: {QCONFIGS[key]}, include: [{pattern!r}]}}"
             for pattern, key in slots.items()]
    extras = "".join(f"    - {item}\n" for item in extra_items)
    return ("apiversion: modelslim_v1\nspec:\n  runner: layer_wise\n  process:\n    - type: group\n      configs:\n"
            + "\n".join(items) + f"\n{extras}  save: [{{type: {saver}, part_file_size: {part_file_size}}}]\n"
            f"  dataset: {dataset}\n")


def quantize(model: Path, out: Path, config_text: str, tags: list[str] | None = None, model_type: str = "Qwen2-demo") -> Path:
    config = out.parent / f"{out.name}.yaml"
    config.write_text(config_text, encoding="utf-8")
    return run_quant(QuantArgs(str(model), str(out), model_type, config_path=str(config), device="cpu", tags=tags))


def problems(path: Path, engine: str | None = None) -> list[str]:
    return [str(problem) for problem in check_saved(path, engine)]


def problems_at(found: list[str], where: str) -> list[str]:
    return [line for line in found if f": {where}" in line]
