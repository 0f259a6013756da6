"""`flex_smooth_quant`: SmoothQuant with exponents chosen per subgraph by an int8 error search.

s = max(max|x|^α / max|W|^β, 1e-5). Unless both are given, α is searched on {0, 0.05, …, 1} with β = 1 − α,
then β on the same grid with that α (a given value stays fixed), scoring each candidate by the relative
RMS error of int8 per-token activations times int8 per-row weights (smoothing/search.py). The norm keeps
its own module (no shift). Data-parallel: channel maxima are all-reduced and the rows all-gathered, so
every rank searches the same data and picks the same scales.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import field_validator

from modelslim_core.models.subgraphs import Subgraph
from modelslim_core.smoothing.processor_base import SmoothingProcessor, SubgraphKinds, open_unit_interval
from modelslim_core.smoothing.scales import power_scale, subgraph_scale, weight_absmax
from modelslim_core.smoothing.search import SmoothingSearch, best_on_grid
from modelslim_core.smoothing.stats import ChannelStats

logger = logging.getLogger(__name__)

SCALE_FLOOR = 1e-5


class FlexSmoothQuantConfig(SubgraphKinds):
    type: Literal["flex_smooth_quant"] = "flex_smooth_quant"
    alpha: float | None = None
    beta: float | None = None

    _unit_interval = field_validator("alpha", "beta", mode="before")(open_unit_interval)


class FlexSmoothQuantProcessor(SmoothingProcessor):
    config_class = FlexSmoothQuantConfig
    config: FlexSmoothQuantConfig
    keep_rows = True

    @classmethod
    def supports_distributed(cls, config: FlexSmoothQuantConfig) -> bool:
        return True

    def smooth(self, subgraph: Subgraph, stats: ChannelStats) -> None:
        act, weight = stats.absmax, weight_absmax(subgraph.targets)

        def scale(alpha: float, beta: float):
            return subgraph_scale(subgraph, act, weight, lambda a, w: power_scale(a, w, alpha, beta, SCALE_FLOOR))

        alpha, beta = self.config.alpha, self.config.beta
        if alpha is None or beta is None:
            search = SmoothingSearch(stats.rows, subgraph.targets)
            incumbent: tuple[float | None, float] = (None, float("inf"))
            if alpha is None:
                fixed_beta = beta
                alpha, error = best_on_grid(
                    lambda a: search.int8_error(scale(a, 1.0 - a if fixed_beta is None else fixed_beta)))
                incumbent = (1.0 - alpha, error)
            if beta is None:
                beta, _ = best_on_grid(lambda b: search.int8_error(scale(alpha, b)), incumbent=incumbent)
        logger.debug("%s: flex_smooth_quant alpha=%.2f beta=%.2f", subgraph.source_name, alpha, beta)
        self.context.recorder.debug("search", f"{subgraph.source_name}.alpha", alpha)
        self.context.recorder.debug("search", f"{subgraph.source_name}.beta", beta)
        self.fuse(subgraph, scale(alpha, beta))
