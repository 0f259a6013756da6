"""MindIE-SD checkpoints through the reference runtime: a Wan2.1 transformer rebuilt from the SAVED tensors.

The mindie file layout (names, description) is read here; every quantized linear is the shared reference
runtime's kernel (modelslim_core.formats.kernels), which computes what the Ascend kernels
compute, in exact integer arithmetic, from nothing but the checkpoint's tensors:
- W8A8 (static): x_q = clamp(round(x / input_scale) + input_offset, -128, 127);
  y = deq_scale * (x_q · W_qᵀ + quant_bias)   (the float bias is folded into quant_bias, `bias` is unused)
- W8A8_DYNAMIC: per token s = max|x| / 127, x_q = clamp(round(x / s), -128, 127);
  y = (x_q · W_qᵀ) * s * weight_scaleᵀ + bias
FLOAT tensors are loaded into the float model; any model parameter the checkpoint lacks is an error.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from modelslim_core.formats.kernels import KERNELS, LinearShape

QUANTIZED_TAGS = ("W8A8", "W8A8_DYNAMIC")


def _kernel_module(tag: str, name: str, linear: nn.Linear, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """The shared reference runtime's kernel for `tag`, built from the saved tensors."""
    shape = LinearShape(linear.out_features, linear.in_features, linear.bias is not None, None, name)
    return KERNELS[tag].build(tensors, shape)


def read_mindie_checkpoint(out_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors (single file or shards) and the description of a mindie_format_saver output."""
    (description_file,) = out_dir.glob("quant_model_description*.json")
    description = json.loads(description_file.read_text())
    index = out_dir / "quant_model_weight.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else None
    files = files or [p.name for p in out_dir.glob("quant_model_weight*.safetensors")]
    tensors: dict[str, torch.Tensor] = {}
    for name in files:
        tensors.update(load_file(out_dir / name))
    return tensors, description


def load_mindie_transformer(model_dir: Path, out_dir: Path) -> nn.Module:
    """The model's transformer (float32) with every quantized linear replaced by its integer counterpart."""
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel.from_pretrained(model_dir, subfolder="transformer", dtype=torch.float32)
    tensors, description = read_mindie_checkpoint(out_dir)
    used: set[str] = set()
    for name, module in list(model.named_modules()):
        tag = description.get(f"{name}.weight")
        if not isinstance(module, nn.Linear) or tag not in QUANTIZED_TAGS:
            continue
        own = {key[len(name) + 1:]: value for key, value in tensors.items() if key.startswith(f"{name}.")}
        used.update(f"{name}.{suffix}" for suffix in own)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, _kernel_module(tag, name, module, own))
    float_params = {key: value for key, value in tensors.items() if key not in used}
    missing = set(dict(model.named_parameters())) - set(float_params)
    assert not missing, f"checkpoint lacks float parameters: {sorted(missing)[:5]}"
    result = model.load_state_dict({k: v.float() for k, v in float_params.items()}, strict=False)
    assert not result.unexpected_keys, f"checkpoint tensors the model does not have: {result.unexpected_keys[:5]}"
    return model.eval()
