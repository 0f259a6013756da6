"""Source checkpoints written the way quantized hub releases ship them, from a tiny float checkpoint.

FP8 blocks (DeepSeek-V3 / Kimi-K2 / MiniMax-M2): every 2-D linear weight inside the decoder layers, except the
router, becomes float8_e4m3fn with a float32 `weight_scale_inv` per block. INT4 pack-quantized (Kimi-K2-Thinking):
the routed experts' weights are packed by the compressed-tensors package itself (an independent encoder), with
one bf16 scale per group of 32 input columns.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FP8_MAX = torch.finfo(torch.float8_e4m3fn).max


def _copy_side_files(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.is_file() and not file.name.endswith(".safetensors") and not file.name.endswith(".index.json"):
            shutil.copyfile(file, target / file.name)


def _set_quantization_config(target: Path, quantization_config: dict) -> None:
    config_file = target / "config.json"
    config = json.loads(config_file.read_text())
    config["quantization_config"] = quantization_config
    config_file.write_text(json.dumps(config, indent=2))


def _float_tensors(source: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(source.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def is_layer_linear(name: str, tensor: torch.Tensor) -> bool:
    return (".layers." in name and name.endswith(".weight") and tensor.dim() == 2
            and not name.endswith("mlp.gate.weight"))


def fp8_block(weight: torch.Tensor, block: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(float8 weight, float32 scale_inv per block) with each block's max mapped to the FP8 maximum."""
    rows, cols = weight.shape
    br, bc = block
    padded = torch.nn.functional.pad(weight.float(), (0, -cols % bc, 0, -rows % br))
    blocks = padded.reshape(padded.shape[0] // br, br, padded.shape[1] // bc, bc)
    scale_inv = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / FP8_MAX
    expanded = scale_inv.repeat_interleave(br, 0).repeat_interleave(bc, 1)[:rows, :cols]
    return (weight.float() / expanded).to(torch.float8_e4m3fn), scale_inv


def write_fp8_source(source: Path, target: Path, block: tuple[int, int] | None = (32, 32)) -> Path:
    """`source` republished as FP8 blocks; `block=None` writes no weight_block_size (readers assume 128x128)."""
    _copy_side_files(source, target)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in _float_tensors(source).items():
        if is_layer_linear(name, tensor):
            out[name], out[name[:-len("weight")] + "weight_scale_inv"] = fp8_block(tensor, block or (128, 128))
        else:
            out[name] = tensor
    save_file(out, target / "model.safetensors", metadata={"format": "pt"})
    config = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic"}
    if block is not None:
        config["weight_block_size"] = list(block)
    _set_quantization_config(target, config)
    return target


def int4_groups(weight: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int4 codes (int8) and one scale per `group` input columns."""
    rows, cols = weight.shape
    grouped = weight.float().reshape(rows, cols // group, group)
    scale = grouped.abs().amax(dim=-1).clamp(min=1e-12) / 7
    codes = torch.round(grouped / scale.unsqueeze(-1)).clamp(-8, 7).reshape(rows, cols).to(torch.int8)
    return codes, scale


def write_int4_source(source: Path, target: Path, group: int = 32, selects=lambda name: ".mlp.experts." in name) -> Path:
    """`source` republished as compressed-tensors pack-quantized INT4 (routed experts only, as Kimi-K2-Thinking)."""
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    _copy_side_files(source, target)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in _float_tensors(source).items():
        if is_layer_linear(name, tensor) and selects(name):
            prefix = name[:-len(".weight")]
            codes, scale = int4_groups(tensor, group)
            out[f"{prefix}.weight_packed"] = pack_to_int32(codes, 4)
            out[f"{prefix}.weight_scale"] = scale.to(torch.bfloat16)
            out[f"{prefix}.weight_shape"] = torch.tensor(list(tensor.shape), dtype=torch.int32)
        else:
            out[name] = tensor
    save_file(out, target / "model.safetensors", metadata={"format": "pt"})
    _set_quantization_config(target, {
        "quant_method": "compressed-tensors", "format": "pack-quantized", "quantization_status": "compressed",
        "config_groups": {"group_0": {"targets": ["Linear"], "input_activations": None, "weights": {
            "num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": group, "dynamic": False}}},
        "ignore": ["lm_head"]})
    return target
