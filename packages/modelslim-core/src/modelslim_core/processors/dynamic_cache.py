"""`dynamic_cache`: KV-cache int8 ("C8") calibration (docs/algorithms.md, "KV cache and FA3").

The serving engine stores each layer's post-RoPE keys and values in an int8 cache with one static scale and
offset per (KV head, head_dim) channel. This processor observes K and V where the attention kernel receives
them (attention/taps.py) during the unit's calibration forward, keeps a running per-channel min/max over
every calibration sample, and exports per attention module `<attn>.k_proj.kv_cache_scale/_offset` and
`<attn>.v_proj.kv_cache_scale/_offset` (`[num_kv_heads·head_dim]`, the model's dtype, tag `C8`) plus the
description keys `kv_cache_type: C8` and `kv_quant_type: C8`.

Deviation from the reference, on purpose: the reference resets its observer on every call, so the scales
come from the last calibration sample only; here the range covers all samples, and ranges are MIN/MAX
all-reduced across data-parallel ranks (so the processor supports distributed runs). During calibration
the taps only observe; once the ranges are final the unit is run again with K/V going through the int8
cache (attention/processor.py), so the next unit calibrates on what the quantized checkpoint computes.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from modelslim_core.attention.processor import AttentionProcessor
from modelslim_core.attention.qkv_quant import StateParams, channel_params, kv_cache_tap
from modelslim_core.attention.sites import AttentionSite
from modelslim_core.attention.stats import ChannelRange
from modelslim_core.attention.taps import Tap
from modelslim_core.protocol.qconfig import QConfig
from modelslim_core.runtime.exports import ModuleExports, attach_exports
from modelslim_core.runtime.processor import ProcessorConfig

C8 = "C8"
#: Description keys that switch the serving engine's KV cache to int8.
C8_GLOBALS = {"kv_cache_type": C8, "kv_quant_type": C8}


class DynamicCacheConfig(ProcessorConfig):
    type: Literal["dynamic_cache"] = "dynamic_cache"
    qconfig: QConfig
    include: list[str] = Field(default_factory=list, description="attention module names; empty = all")
    exclude: list[str] = Field(default_factory=list)

    @field_validator("qconfig")
    @classmethod
    def _c8_scheme(cls, qc: QConfig) -> QConfig:
        if qc.scope != "per_channel":
            raise ValueError(f"scope must be per_channel for the KV cache (one scale per KV head channel), got {qc.scope}")
        if qc.dtype != "int8":
            raise ValueError(f"dtype must be int8 (the C8 cache is int8), got {qc.dtype}")
        if qc.method != "minmax":
            raise ValueError(f"method must be minmax for the KV cache, got {qc.method!r}")
        if qc.ext:
            raise ValueError(f"ext is not used by the KV-cache quantizer; remove {sorted(qc.ext)}")
        return qc

    def export_types(self) -> frozenset[str]:
        return frozenset({C8})


class DynamicCacheProcessor(AttentionProcessor):
    config_class = DynamicCacheConfig
    config: DynamicCacheConfig
    produces = "KV-cache int8 scales"

    @classmethod
    def handles_stored_weights(cls, config: DynamicCacheConfig) -> bool:
        """It observes keys and values only; no weight is read or written."""
        return True

    @classmethod
    def handles_calibrated_pieces(cls, config: DynamicCacheConfig) -> bool:
        """Each site's statistics are its own attention module's, which lies whole in the attention piece."""
        return True

    def __init__(self, config: DynamicCacheConfig, context):
        super().__init__(config, context)
        self._ranges: dict[str, tuple[ChannelRange, ChannelRange]] = {}
        self._params: dict[str, list[StateParams]] = {}

    def tap_for(self, site: AttentionSite) -> Tap:
        key_range, value_range = self._ranges[site.name] = (ChannelRange(), ChannelRange())

        def observe(query, key, value):
            key_range.update(key)
            value_range.update(value)
            return query, key, value

        return observe

    def final_tap(self, site: AttentionSite) -> Tap:
        return kv_cache_tap(*self._params.pop(site.name))

    def synchronize(self) -> None:
        for site in self._sites:
            for stat in self._ranges[site.name]:
                stat.synchronize((site.kv_channels,))

    def observed(self, site: AttentionSite) -> bool:
        return all(stat.seen for stat in self._ranges[site.name])

    def finish_site(self, site: AttentionSite) -> None:
        export_dtype = self.context.adapter.source_dtype or self.context.compute_dtype
        tensors = []
        self._params[site.name] = []
        for proj, stat in zip(("k_proj", "v_proj"), self._ranges.pop(site.name)):
            params = kv_cache_params(stat, self.config.qconfig.symmetric, export_dtype)
            self._params[site.name].append(params)
            tensors += [(f"{proj}.kv_cache_scale", params.scale, C8), (f"{proj}.kv_cache_offset", params.offset, C8)]
        attach_exports(site.module, self.config.type, ModuleExports(tensors=tensors, globals=dict(C8_GLOBALS)))


def kv_cache_params(stat: ChannelRange, symmetric: bool, export_dtype: torch.dtype) -> StateParams:
    """Per-channel int8 parameters, in the dtype the serving engine loads them in (the model's dtype)."""
    params = channel_params(*stat.range(), symmetric)
    return StateParams(params.dtype, params.scale.to(export_dtype), params.offset.to(export_dtype))
