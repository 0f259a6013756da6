"""A MindIE-SD checkpoint run on the CPU from nothing but its saved tensors: the reference runtime of a denoiser.

The float denoiser is built from the pipeline directory's component folder (float32); then, from the
mindie_format_saver output, every quantized linear becomes the shared reference kernel of its tag
(modelslim_core.formats.kernels), FLOAT tensors are loaded into the model, and every attention
module with saved `q_rot`/`k_rot` and a `<attn>.quant_type` entry gets what MindIE-SD does at its attention
kernel: Q·q_rot and K·k_rot, then the dynamic quantization the entry names (FP8 per token, MXFP4/MXFP8 per
block). A tensor the model has no place for, or a parameter the checkpoint lacks, is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from modelslim_core.attention.fa_quant_type import parse_quant_type
from modelslim_core.attention.qkv_quant import fa_tap
from modelslim_core.attention.taps import add_tap
from modelslim_core.errors import CheckpointError
from modelslim_core.processors.online_quarot import rotation_tap
from modelslim_core.formats.kernels import KERNELS, LinearShape

ROTATIONS = ("q_rot", "k_rot")


def read_mindie_checkpoint(out_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors (single file or shards) and the description of a mindie_format_saver output."""
    descriptions = sorted(out_dir.glob("quant_model_description*.json"))
    if len(descriptions) != 1:
        raise CheckpointError(f"{out_dir} holds {len(descriptions)} quant_model_description*.json files.",
                              "point at one mindie_format_saver output directory.")
    description = json.loads(descriptions[0].read_text())
    index = out_dir / "quant_model_weight.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else \
        [p.name for p in sorted(out_dir.glob("quant_model_weight*.safetensors"))]
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        tensors.update(load_file(out_dir / name))
    return tensors, description


def load_float_denoiser(model_dir: Path, component: str) -> nn.Module:
    import diffusers

    index = json.loads((model_dir / "model_index.json").read_text())
    cls = getattr(diffusers, index[component][1])
    return cls.from_pretrained(model_dir, subfolder=component, dtype=torch.float32, local_files_only=True).eval()


def _own(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) + 1:]: value for key, value in tensors.items() if key.startswith(f"{prefix}.")}


def _attach_attention(model: nn.Module, tensors: dict[str, torch.Tensor], description: dict[str, str], used: set[str]) -> None:
    for key, value in description.items():
        if not key.endswith(".quant_type"):
            continue
        name = key[: -len(".quant_type")]
        module = model.get_submodule(name)
        rotations = [f"{name}.{suffix}" for suffix in ROTATIONS if f"{name}.{suffix}" in tensors]
        if rotations:
            if len(rotations) != 2 or not torch.equal(tensors[rotations[0]], tensors[rotations[1]]):
                raise CheckpointError(f"{name} has {', '.join(rotations)}; the reference runtime needs equal q_rot and k_rot.",
                                      "re-run the quantization with online_quarot on this module.")
            add_tap(module, "reference:rotation", rotation_tap(tensors[rotations[0]].float()))
            used.update(rotations)
        settings = parse_quant_type(value, key)
        if not all(dynamic for _, dynamic in settings.values()):
            raise CheckpointError(f"{key} is {value!r}: static FA3 scales are not part of MindIE-SD checkpoints here.",
                                  "use dynamic FA3 (fp8_e4m3 per_token or mx per_block) for generation models.")
        add_tap(module, "reference:fa3", fa_tap({letter: (dtype, None) for letter, (dtype, _) in settings.items()}))


def load_mindie_denoiser(model_dir: Path, component: str, out_dir: Path) -> tuple[nn.Module, nn.Module]:
    """(the float denoiser, the denoiser computing from the checkpoint in `out_dir`), both float32."""
    reference = load_float_denoiser(model_dir, component)
    model = load_float_denoiser(model_dir, component)
    tensors, description = read_mindie_checkpoint(out_dir)
    used: set[str] = set()
    for name, module in list(model.named_modules()):
        tag = description.get(f"{name}.weight")
        if not isinstance(module, nn.Linear) or tag not in KERNELS:
            continue
        own = _own(tensors, name)
        used.update(f"{name}.{suffix}" for suffix in own)
        shape = LinearShape(module.out_features, module.in_features, module.bias is not None, None, name)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, KERNELS[tag].build(own, shape))
    _attach_attention(model, tensors, description, used)
    float_params = {key: value for key, value in tensors.items() if key not in used}
    missing = set(dict(model.named_parameters())) - set(float_params)
    if missing:
        raise CheckpointError(f"{out_dir} lacks float parameters, e.g. {sorted(missing)[:3]}.", "re-run the quantization.")
    result = model.load_state_dict({k: v.float() for k, v in float_params.items()}, strict=False)
    if result.unexpected_keys:
        raise CheckpointError(f"{out_dir} holds tensors the model has no place for, e.g. {result.unexpected_keys[:3]}.",
                              "check that the checkpoint belongs to this pipeline and component.")
    return reference, model.eval()
