"""`flex_awq_ssz`: AWQ-style scale s = max(mean|x|^α, 1e-5), α searched with the real quantizer.

Meant to precede a linear_quant with the same `qconfig` (typically int4 SSZ weights): each α on
{0, 0.05, …, 1} is scored by quantizing the scaled consumers exactly as that linear_quant would and
measuring the relative RMS output error (smoothing/search.py); a given `alpha` skips the search. The
search scores the same mean-based scale that is finally applied (the reference scores a max-based one).
`ov` pairs always combine a KV group by the max. Data-parallel like flex_smooth_quant.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

from pydantic import field_validator

from modelslim_core.models.subgraphs import Subgraph
from modelslim_core.protocol.qconfig import LinearQConfig
from modelslim_core.quant.quantized_linear import LinearQuantizer
from modelslim_core.smoothing.processor_base import SmoothingProcessor, SubgraphKinds, open_unit_interval
from modelslim_core.smoothing.scales import power_scale, subgraph_scale
from modelslim_core.smoothing.search import SmoothingSearch, best_on_grid
from modelslim_core.smoothing.stats import ChannelStats

logger = logging.getLogger(__name__)

SCALE_FLOOR = 1e-5


class FlexAwqSszConfig(SubgraphKinds):
    type: Literal["flex_awq_ssz"] = "flex_awq_ssz"
    alpha: float | None = None
    qconfig: LinearQConfig

    _unit_interval = field_validator("alpha", mode="before")(open_unit_interval)


class FlexAwqSszProcessor(SmoothingProcessor):
    config_class = FlexAwqSszConfig
    config: FlexAwqSszConfig
    keep_rows = True
    uses_mean_abs = True

    def __init__(self, config: FlexAwqSszConfig, context):
        super().__init__(config, context)
        self.quantizer = LinearQuantizer(config.qconfig, f"{config.yaml_path}.qconfig")

    @classmethod
    def supports_distributed(cls, config: FlexAwqSszConfig) -> bool:
        return True

    def smooth(self, subgraph: Subgraph, stats: ChannelStats) -> None:
        subgraph = dataclasses.replace(subgraph, group_method="max")
        act = stats.mean_abs

        def scale(alpha: float):
            return subgraph_scale(subgraph, act, act, lambda a, _w: power_scale(a, _w, alpha, 0.0, SCALE_FLOOR))

        alpha = self.config.alpha
        if alpha is None:
            search = SmoothingSearch(stats.rows, subgraph.targets)
            alpha, _ = best_on_grid(lambda a: search.quantizer_error(scale(a), self.quantizer))
        logger.debug("%s: flex_awq_ssz alpha=%.2f", subgraph.source_name, alpha)
        self.context.recorder.debug("search", f"{subgraph.source_name}.alpha", alpha)
        self.fuse(subgraph, scale(alpha))
