"""Would MindIE-SD load this checkpoint? Its own `mindiesd.quantize()` is run on it.

MindIE-SD quantizes a float diffusion transformer in place from `quant_model_description_<type>.json`: it
checks file permissions (0o640 or tighter), opens `quant_model_weight_<type>.safetensors` (one file), and
replaces every described linear with its quantized layer, reading that layer's tensors by name. The float
network is not needed for that: a skeleton of `nn.Linear` modules on the meta device, one per described
layer with the stored weight's logical shape, is what `quantize()` walks, plus an empty module at every
attention that has an FA `quant_type` entry (MindIE-SD gives such a module a `fa_quant` kernel wrapper). A
problem is reported when `quantize()` raises (with its own message), leaves a described quantized layer
unreplaced, or gives a described attention no `fa_quant` (a type it does not know is skipped silently: that
attention would be served in float).
"""

from __future__ import annotations

import contextlib
import io
import logging

import torch
from torch import nn

from modelslim.engines.checkpoint import EngineCheckpoint
from modelslim.engines.problems import Problem
from modelslim.engines.stubs import hardware_stubs
from modelslim.engines.vllm_ascend import logical_shape

ENGINE = "mindie-sd"


#: Description keys of one attention's FA quantization (`<attn>.quant_type`), not the file-wide type.
FA_ENTRY = ".quant_type"


def _fa_attentions(checkpoint: EngineCheckpoint) -> dict[str, str]:
    """Attention module name -> its FA quant type string, from the description."""
    return {key[: -len(FA_ENTRY)]: value for key, value in checkpoint.description.items()
            if key.endswith(FA_ENTRY) and key != "model_quant_type" and isinstance(value, str)}


def _module_at(root: nn.Module, prefix: str) -> nn.Module:
    parent = root
    for part in prefix.split("."):
        if not hasattr(parent, part):
            parent.add_module(part, nn.Module())
        parent = getattr(parent, part)
    return parent


def _skeleton(checkpoint: EngineCheckpoint) -> tuple[nn.Module, list[str]]:
    """A module tree with one meta-device nn.Linear per described quantized linear and a module per FA attention."""
    root = nn.Module()
    for attention in _fa_attentions(checkpoint):
        _module_at(root, attention)
    quantized = []
    for key, tag in checkpoint.tags().items():
        if not key.endswith(".weight") or tag == "FLOAT" or key not in checkpoint.tensors:
            continue
        prefix = key[: -len(".weight")]
        out, inp = logical_shape(tag, checkpoint.tensors[key].shape)
        *path, leaf = prefix.split(".")
        parent = _module_at(root, ".".join(path)) if path else root
        parent.add_module(leaf, nn.Linear(inp, out, bias=f"{prefix}.bias" in checkpoint.tensors, device="meta"))
        quantized.append(prefix)
    return root, quantized


def check(checkpoint: EngineCheckpoint) -> list[Problem]:
    if checkpoint.layout != "mindie":
        return [Problem(ENGINE, checkpoint.description_file.name,
                        "MindIE-SD reads quant_model_description_<type>.json (mindie_format_saver output)")]
    model, quantized = _skeleton(checkpoint)
    dtype = checkpoint.serving_dtype if checkpoint.serving_dtype in (torch.float16, torch.bfloat16) else torch.bfloat16
    with hardware_stubs(lambda: None), contextlib.redirect_stdout(io.StringIO()):
        logging.getLogger("mindiesd").setLevel(logging.ERROR)
        try:
            from mindiesd import quantize  # noqa: PLC0415

            quantize(model, quant_des_path=str(checkpoint.description_file.resolve()), dtype=dtype)
        except Exception as exc:  # noqa: BLE001 - MindIE-SD's refusal is the finding
            return [Problem(ENGINE, checkpoint.description_file.name,
                            f"mindiesd.quantize() fails: {type(exc).__name__}: {exc}")]
    problems = []
    for prefix in quantized:
        if type(model.get_submodule(prefix)) is nn.Linear:
            problems.append(Problem(ENGINE, prefix, "mindiesd.quantize() left this described quantized layer as a "
                                                    "float nn.Linear (its type is not one MindIE-SD loads)"))
    for attention, fa_type in _fa_attentions(checkpoint).items():
        if not hasattr(model.get_submodule(attention), "fa_quant"):
            problems.append(Problem(ENGINE, attention, f"mindiesd.quantize() gave this attention no FA quantization: "
                                                       f"its quant_type {fa_type!r} is not one MindIE-SD applies "
                                                       "(FP8_DYNAMIC, MXFP8_DYNAMIC, MXFP4_DYNAMIC), so it is served in float"))
    return problems
