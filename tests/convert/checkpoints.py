"""Tiny source checkpoints for conversion tests, written tensor by tensor with safetensors (no model built).

`fp8_block_checkpoint` lays a Qwen3-shaped model out as the FP8-block releases do (DeepSeek-V3, Qwen3-FP8):
every linear's `weight` in float8_e4m3fn and `weight_scale_inv` with one float32 per 128x128 block, plus
`quantization_config.weight_block_size` in config.json. `packed_int4_checkpoint` stores the MLP linears as
compressed-tensors pack-quantized int4 (8 codes per int32, offset 8, per-group scales). Both return the
float weights the quantized tensors stand for, so tests compare against values computed here, not by the
code under test.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import save_file

HIDDEN, INTER, VOCAB, HEADS, KV_HEADS, HEAD_DIM, LAYERS = 256, 384, 512, 4, 2, 64, 2
BLOCK = 128


def config_json(quantization: dict | None) -> dict:
    config = {
        "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": HIDDEN,
        "intermediate_size": INTER, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS, "head_dim": HEAD_DIM, "vocab_size": VOCAB, "max_position_embeddings": 256,
        "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "hidden_act": "silu", "attention_bias": False,
    }
    if quantization:
        config["quantization_config"] = quantization
    return config


def linear_shapes() -> dict[str, tuple[int, int]]:
    shapes = {}
    for layer in range(LAYERS):
        p = f"model.layers.{layer}"
        shapes.update({f"{p}.self_attn.q_proj": (HEADS * HEAD_DIM, HIDDEN), f"{p}.self_attn.k_proj": (KV_HEADS * HEAD_DIM, HIDDEN),
                       f"{p}.self_attn.v_proj": (KV_HEADS * HEAD_DIM, HIDDEN), f"{p}.self_attn.o_proj": (HIDDEN, HEADS * HEAD_DIM),
                       f"{p}.mlp.gate_proj": (INTER, HIDDEN), f"{p}.mlp.up_proj": (INTER, HIDDEN), f"{p}.mlp.down_proj": (HIDDEN, INTER)})
    return shapes


def float_tensors(seed: int = 0) -> dict[str, torch.Tensor]:
    """Norms, embeddings and lm_head of the tiny model (bf16), stored as they are."""
    g = torch.Generator().manual_seed(seed)
    tensors = {"model.embed_tokens.weight": torch.randn(VOCAB, HIDDEN, generator=g).bfloat16(),
               "lm_head.weight": (torch.randn(VOCAB, HIDDEN, generator=g) * 0.05).bfloat16(),
               "model.norm.weight": torch.ones(HIDDEN).bfloat16()}
    for layer in range(LAYERS):
        p = f"model.layers.{layer}"
        tensors.update({f"{p}.input_layernorm.weight": torch.ones(HIDDEN).bfloat16(),
                        f"{p}.post_attention_layernorm.weight": torch.ones(HIDDEN).bfloat16(),
                        f"{p}.self_attn.q_norm.weight": torch.ones(HEAD_DIM).bfloat16(),
                        f"{p}.self_attn.k_norm.weight": torch.ones(HEAD_DIM).bfloat16()})
    return tensors


def fp8_block(weight: torch.Tensor, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """FP8 values and per-block multipliers (amax / 448), the way FP8-block releases are made."""
    rows, cols = weight.shape
    br, bc = math.ceil(rows / block), math.ceil(cols / block)
    scale = torch.empty(br, bc)
    for i in range(br):
        for j in range(bc):
            scale[i, j] = weight[i * block:(i + 1) * block, j * block:(j + 1) * block].abs().max() / 448
    expanded = scale.repeat_interleave(block, 0)[:rows].repeat_interleave(block, 1)[:, :cols]
    return (weight / expanded).to(torch.float8_e4m3fn), scale


def write(directory: Path, tensors: dict[str, torch.Tensor], config: dict, shards: int = 2) -> Path:
    """The tensors in `shards` files with an index (as hub releases are), config.json and a tokenizer stub."""
    directory.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    weight_map = {}
    for index in range(shards):
        part = names[index::shards]
        file = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in part}, str(directory / file))
        weight_map.update({n: file for n in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    (directory / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    return directory


def fp8_block_checkpoint(directory: Path, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    """(checkpoint dir, the exact float value of every linear weight: fp8 * scale, computed here)."""
    g = torch.Generator().manual_seed(seed + 1)
    tensors = float_tensors(seed)
    expected = {}
    for name, (out, inp) in linear_shapes().items():
        values, scale = fp8_block(torch.randn(out, inp, generator=g) * 0.02)
        tensors[f"{name}.weight"], tensors[f"{name}.weight_scale_inv"] = values, scale
        expanded = scale.repeat_interleave(BLOCK, 0)[:out].repeat_interleave(BLOCK, 1)[:, :inp]
        expected[f"{name}.weight"] = values.float() * expanded
    quant = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic", "weight_block_size": [BLOCK, BLOCK]}
    return write(directory, tensors, config_json(quant)), expected


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Signed 4-bit codes [out, in] -> int32 words [out, in/8], code + 8 in nibble k of word k//8 (lowest first)."""
    unsigned = (codes.to(torch.int64) + 8).reshape(codes.shape[0], -1, 8)
    words = sum(unsigned[..., k] << (4 * k) for k in range(8))
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def packed_int4_checkpoint(directory: Path, group: int = 32, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    """MLP linears pack-quantized (int4, symmetric, groups of `group` input columns); attention stays bf16."""
    g = torch.Generator().manual_seed(seed + 2)
    tensors = float_tensors(seed)
    expected = {}
    for name, (out, inp) in linear_shapes().items():
        if ".mlp." not in name:
            tensors[f"{name}.weight"] = (torch.randn(out, inp, generator=g) * 0.02).bfloat16()
            continue
        codes = torch.randint(-8, 8, (out, inp), generator=g)
        scale = torch.rand(out, inp // group, generator=g) * 0.01 + 0.001
        tensors[f"{name}.weight_packed"] = pack_int4(codes)
        tensors[f"{name}.weight_scale"] = scale.bfloat16()
        tensors[f"{name}.weight_shape"] = torch.tensor([out, inp], dtype=torch.int32)
        expected[f"{name}.weight"] = codes.float() * scale.bfloat16().float().repeat_interleave(group, 1)
    quant = {"quant_method": "compressed-tensors", "format": "pack-quantized",
             "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": 4, "type": "int",
                                                                               "symmetric": True, "strategy": "group",
                                                                               "group_size": group}}}}
    return write(directory, tensors, config_json(quant)), expected


def release_fp8_checkpoint(directory: Path, hf_config, model_type: str, seed: int = 0) -> Path:
    """A checkpoint of any architecture laid out as the FP8-block releases are, from the adapter's weightless
    skeleton (names and shapes only): every 2-D linear weight except embeddings, lm_head and the MoE router in
    FP8 with `weight_scale_inv`, everything else bf16."""
    from modelslim_core.models.resolve import create_adapter

    directory.mkdir(parents=True, exist_ok=True)
    hf_config.save_pretrained(directory)
    skeleton = create_adapter(model_type, directory, False).build_skeleton(torch.bfloat16)
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, param in skeleton.named_parameters():
        if name.endswith("norm.weight"):
            tensors[name] = torch.ones(param.shape, dtype=torch.bfloat16)
            continue
        value = torch.randn(*param.shape, generator=g) * 0.02
        if param.dim() == 2 and "embed" not in name and not name.startswith("lm_head") and not name.endswith("mlp.gate.weight"):
            tensors[name], tensors[name.replace(".weight", ".weight_scale_inv")] = fp8_block(value)
        else:
            tensors[name] = value.bfloat16()
    config = json.loads((directory / "config.json").read_text())
    config.update(torch_dtype="bfloat16", quantization_config={"quant_method": "fp8", "weight_block_size": [BLOCK, BLOCK]})
    return write(directory, tensors, config)
