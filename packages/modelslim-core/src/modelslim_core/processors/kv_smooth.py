"""`kv_smooth`: flatten the per-channel range of the keys by moving it onto the queries (algorithms.md §3.7).

During the unit's calibration forward the post-RoPE keys are observed where the attention kernel receives
them (attention/taps.py); afterwards each channel's running max |K| (over every sample, MAX all-reduced
across data-parallel ranks) gives the factor (max|K|)^smooth_factor, folded into k_proj/q_proj rows or into
k_norm/q_norm (attention/kv_smoothing.py). Q·Kᵀ, and so the model's function, is unchanged; keys that go
into an int8 KV cache or FA3 kernel afterwards have flatter channels. Must run before the attention
projections are quantized.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from modelslim_core.attention.kv_smoothing import apply_kv_smoothing
from modelslim_core.attention.processor import AttentionProcessor
from modelslim_core.attention.sites import AttentionSite
from modelslim_core.attention.stats import ChannelRange
from modelslim_core.attention.taps import Tap
from modelslim_core.runtime.matching import LayerSelection
from modelslim_core.runtime.processor import ProcessorConfig


class KVSmoothConfig(ProcessorConfig, LayerSelection):
    type: Literal["kv_smooth"] = "kv_smooth"
    smooth_factor: float = Field(default=1.0, gt=0, description="exponent of max|K| (> 0)")


class KVSmoothProcessor(AttentionProcessor):
    config_class = KVSmoothConfig
    config: KVSmoothConfig
    produces = "KV smoothing factors"

    def __init__(self, config: KVSmoothConfig, context):
        super().__init__(config, context)
        self._keys: dict[str, ChannelRange] = {}

    def tap_for(self, site: AttentionSite) -> Tap:
        keys = self._keys[site.name] = ChannelRange()

        def observe(query, key, value):
            keys.update(key)
            return query, key, value

        return observe

    def synchronize(self) -> None:
        for site in self._sites:
            self._keys[site.name].synchronize((site.kv_channels,))

    def observed(self, site: AttentionSite) -> bool:
        return self._keys[site.name].seen

    def finish_site(self, site: AttentionSite) -> None:
        apply_kv_smoothing(site, self._keys.pop(site.name).abs_max(), self.config.smooth_factor)
