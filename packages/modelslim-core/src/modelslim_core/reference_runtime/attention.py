"""The attention side of a checkpoint: KV-cache int8 (C8) and FA3 Q/K/V quantization.

When the description declares `kv_cache_type: C8`, every attention module that has any
`<attn>.k_proj|v_proj.kv_cache_scale|_offset` tensor must have all four (`[num_kv_heads·head_dim]`, the
model's dtype), and its post-RoPE K and V are quantized to int8 with them before attention, as the serving
engine's cache does. When an attention module has a `<attn>.quant_type` entry, its static branches need
`<attn>.fa_<q|k|v>.scale` float32 `[heads, 1]` and `.offset` zeros `[heads, 1]` (int8 for INT8, float32
for FP8), and Q/K/V are quantized per head (static) or per token (dynamic) before attention.
The states are changed through attention taps (attention/taps.py), so the architecture's own code runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from modelslim_core.attention.fa_quant_type import parse_quant_type
from modelslim_core.attention.qkv_quant import FABranches, StateParams, fa_tap, kv_cache_tap
from modelslim_core.attention.sites import AttentionSite, find_attention_sites
from modelslim_core.attention.taps import add_tap
from modelslim_core.errors import CheckpointError
from modelslim_core.reference_runtime.checkpoint import SavedCheckpoint
from modelslim_core.formats.kernels.base import TensorSpec

KV_SUFFIXES = ("k_proj.kv_cache_scale", "k_proj.kv_cache_offset", "v_proj.kv_cache_scale", "v_proj.kv_cache_offset")
C8_TAG, FA_TAG = "C8", "FAQuant"
TAP_KEY = "reference_runtime"


@dataclass
class AttentionPlan:
    """Which attention modules quantize which states, and the tensors that requires."""

    specs: dict[str, tuple[TensorSpec, str]] = field(default_factory=dict)  # name -> (spec, tag)
    c8: list[AttentionSite] = field(default_factory=list)
    fa: dict[str, tuple[AttentionSite, dict[str, tuple[str, bool]]]] = field(default_factory=dict)


def _c8_declared(checkpoint: SavedCheckpoint) -> bool:
    kv_type = checkpoint.description.get("kv_cache_type")
    if kv_type not in (None, C8_TAG):
        raise CheckpointError(f"{checkpoint.path}: kv_cache_type is {kv_type!r}; the reference runtime knows C8 only.",
                              "re-run the quantization with dynamic_cache.")
    return kv_type == C8_TAG


def plan_attention(model: nn.Module, checkpoint: SavedCheckpoint, source_dtype: torch.dtype | None) -> AttentionPlan:
    plan = AttentionPlan()
    saved = checkpoint.names()
    c8 = _c8_declared(checkpoint)
    if not c8 and not checkpoint.entries:
        return plan
    for site in find_attention_sites(model, ""):
        if c8 and any(f"{site.name}.{suffix}" in saved for suffix in KV_SUFFIXES):
            plan.c8.append(site)
            for suffix in KV_SUFFIXES:
                plan.specs[f"{site.name}.{suffix}"] = (TensorSpec((source_dtype or torch.float32,), (site.kv_channels,)), C8_TAG)
        entry = checkpoint.entries.get(f"{site.name}.quant_type")
        if entry is None:
            continue
        settings = parse_quant_type(entry, f"{site.name}.quant_type")
        plan.fa[site.name] = (site, settings)
        for letter, (dtype, dynamic) in settings.items():
            if dtype not in ("int8", "fp8_e4m3"):
                raise CheckpointError(f"{site.name}.quant_type is {entry!r}: {dtype} attention states are not supported "
                                      "by the reference runtime.", "use int8 or fp8_e4m3 FA3 quantization.")
            if dynamic or letter not in "QKV":
                continue
            heads = site.num_heads if letter == "Q" else site.num_kv_heads
            prefix = f"{site.name}.fa_{letter.lower()}"
            offset_dtype = torch.int8 if dtype == "int8" else torch.float32
            plan.specs[f"{prefix}.scale"] = (TensorSpec((torch.float32,), (heads, 1)), FA_TAG)
            plan.specs[f"{prefix}.offset"] = (TensorSpec((offset_dtype,), (heads, 1)), FA_TAG)
    return plan


def install_attention(model: nn.Module, plan: AttentionPlan, checkpoint: SavedCheckpoint) -> None:
    """Attach taps that quantize the states as the checkpoint says (C8 first: the cache feeds the kernel)."""
    modules = dict(model.named_modules())
    for site in plan.c8:
        params = {}
        for proj in ("k", "v"):
            scale = checkpoint.tensor(f"{site.name}.{proj}_proj.kv_cache_scale").float()
            offset = checkpoint.tensor(f"{site.name}.{proj}_proj.kv_cache_offset").float()
            params[proj] = StateParams("int8", scale, offset)
        add_tap(modules[site.name], f"{TAP_KEY}:c8", kv_cache_tap(params["k"], params["v"]))
    for name, (site, settings) in plan.fa.items():
        branches: FABranches = {}
        for letter, (dtype, dynamic) in settings.items():
            if letter not in "QKV":
                continue
            if dynamic:
                branches[letter] = (dtype, None)
                continue
            prefix = f"{name}.fa_{letter.lower()}"
            params = StateParams(dtype, checkpoint.tensor(f"{prefix}.scale").float(), checkpoint.tensor(f"{prefix}.offset").float())
            branches[letter] = (dtype, params)
        add_tap(modules[name], f"{TAP_KEY}:fa", fa_tap(branches))
