"""Real-dimension random checkpoints for the scale benchmark, written tensor by tensor.

The model is never instantiated: the adapter's weightless skeleton (every parameter on `meta`) gives the
checkpoint's tensor names and shapes, and each tensor is filled and streamed to a sharded safetensors
file on its own, so building a 10 GB checkpoint takes one tensor of memory. Values repeat a 4M-element
random block (different offset per tensor): quantization cost does not depend on the values, and filling
stays at disk speed instead of a random-number generator's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_BLOCK = 1 << 22


def qwen2_72b_config(layers: int, vocab: int = 152064):
    """Qwen2.5-72B's geometry (hidden 8192, intermediate 29568, 64 heads, 8 KV heads) with `layers` layers."""
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=vocab, hidden_size=8192, intermediate_size=29568, num_hidden_layers=layers,
                       num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=32768,
                       rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False, dtype="bfloat16")


def deepseek_v3_config(experts: int, vocab: int = 129280, dense_layers: int = 1):
    """DeepSeek-V3's geometry (hidden 7168, MLA, experts of 7168x2048, one shared expert): `dense_layers` dense
    layers + 1 MoE layer."""
    from transformers import DeepseekV3Config

    return DeepseekV3Config(
        vocab_size=vocab, hidden_size=7168, intermediate_size=18432, moe_intermediate_size=2048, num_hidden_layers=dense_layers + 1,
        num_attention_heads=128, num_key_value_heads=128, n_shared_experts=1, n_routed_experts=experts,
        num_experts_per_tok=8, n_group=8, topk_group=4, routed_scaling_factor=2.5, first_k_dense_replace=dense_layers,
        q_lora_rank=1536, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128, v_head_dim=128,
        max_position_embeddings=4096, tie_word_embeddings=False, dtype="bfloat16")


def _fill(shape: tuple[int, ...], name: str, seed: int, block: torch.Tensor) -> torch.Tensor:
    if name.endswith("norm.weight"):
        return torch.ones(shape, dtype=torch.bfloat16)
    if name.endswith(("bias", "e_score_correction_bias")):
        return torch.zeros(shape, dtype=torch.bfloat16)
    numel = 1
    for dim in shape:
        numel *= dim
    out = torch.empty(numel, dtype=torch.bfloat16)
    shifted = torch.roll(block, shifts=(seed * 7919) % _BLOCK)
    for start in range(0, numel, _BLOCK):
        end = min(numel, start + _BLOCK)
        out[start:end] = shifted[: end - start]
    return out.reshape(shape)


def build_checkpoint(path: Path, config, model_type: str, shard_gib: float = 4.0) -> int:
    """Write `config`'s checkpoint (bf16, sharded, HF names) to `path`; returns its payload bytes."""
    from modelslim_core.io.safetensors_stream import ShardedSafetensorsWriter
    from modelslim_core.models.resolve import create_adapter

    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    for name in TOKENIZER_FILES:
        (path / name).write_bytes((REPO / "examples" / "qwen2-demo" / name).read_bytes())
    skeleton = create_adapter(model_type, path, False).build_skeleton(torch.bfloat16)
    block = (torch.randn(_BLOCK, generator=torch.Generator().manual_seed(0)) * 0.02).to(torch.bfloat16)
    total = 0
    with ShardedSafetensorsWriter(path, "model", 0, limit_bytes=int(shard_gib * 2**30)) as writer:
        for seed, (name, param) in enumerate(skeleton.named_parameters()):
            tensor = _fill(tuple(param.shape), name, seed, block)
            writer.write(name, tensor)
            total += tensor.numel() * tensor.element_size()
            del tensor
    config_json = json.loads((path / "config.json").read_text())
    config_json["torch_dtype"] = "bfloat16"
    (path / "config.json").write_text(json.dumps(config_json, indent=2))
    return total
