"""`smooth_quant`: SmoothQuant on norm → linears subgraphs (docs/algorithms.md, "Smoothing").

s_j = max(max|x_j|^α / max|W_:j|^(1−α), 1e-5) moves activation outliers of a norm's output into the
weights of the linears reading it. Only norm-linear subgraphs; `symmetric: false` also centres the
norm's output (see smoothing/closed_form.py). Not data-parallel, as in the reference.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from modelslim_core.models.subgraphs import Subgraph
from modelslim_core.smoothing.closed_form import closed_form_scale
from modelslim_core.smoothing.processor_base import SmoothingConfig, SmoothingProcessor, open_unit_interval
from modelslim_core.smoothing.stats import ChannelStats

#: smooth_quant's scale floor is not configurable.
SCALE_FLOOR = 1e-5


class SmoothQuantConfig(SmoothingConfig):
    type: Literal["smooth_quant"] = "smooth_quant"
    alpha: float = 0.5
    symmetric: bool = True

    _alpha = field_validator("alpha", mode="before")(open_unit_interval)


class SmoothQuantProcessor(SmoothingProcessor):
    smooths_in_pieces = True
    config_class = SmoothQuantConfig
    config: SmoothQuantConfig

    def enabled_kinds(self) -> tuple[str, ...]:
        return ("norm-linear",)

    def smooth(self, subgraph: Subgraph, stats: ChannelStats) -> None:
        self.fuse(subgraph, *closed_form_scale(subgraph, stats, self.config.alpha, SCALE_FLOOR, self.config.symmetric))
