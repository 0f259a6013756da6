"""`iter_smooth`: closed-form SmoothQuant scaling on all four subgraph kinds, optionally centred.

Same formula as smooth_quant with α = 0.9 by default and a configurable floor `scale_min`; with
`symmetric: false` norm-linear subgraphs are also shifted so the norm's output is zero-centred (its bias
absorbs −shift, the linears' biases +W·shift). Despite the name the scale is computed once per subgraph.
Data-parallel: min / max / |x| statistics are all-reduced (MIN / MAX / SUM), so ranks agree exactly.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator

from modelslim_core.models.subgraphs import Subgraph
from modelslim_core.smoothing.closed_form import closed_form_scale
from modelslim_core.smoothing.processor_base import SmoothingProcessor, SubgraphKinds, open_unit_interval
from modelslim_core.smoothing.stats import ChannelStats


class IterSmoothConfig(SubgraphKinds):
    type: Literal["iter_smooth"] = "iter_smooth"
    alpha: float = 0.9
    scale_min: float = 1e-5
    symmetric: bool = True

    _unit_interval = field_validator("alpha", "scale_min", mode="before")(open_unit_interval)


class IterSmoothProcessor(SmoothingProcessor):
    smooths_in_pieces = True
    config_class = IterSmoothConfig
    config: IterSmoothConfig

    @classmethod
    def supports_distributed(cls, config: IterSmoothConfig) -> bool:
        return True

    def smooth(self, subgraph: Subgraph, stats: ChannelStats) -> None:
        self.fuse(subgraph, *closed_form_scale(subgraph, stats, self.config.alpha, self.config.scale_min,
                                               self.config.symmetric))
