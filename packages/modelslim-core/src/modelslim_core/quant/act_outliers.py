"""Static activation ranges far above their peers': the layers a per-tensor int8 scale will hurt.

A static per-tensor quantizer has one step for every token and channel of a layer's input. Real models have
layers (typically one or two `down_proj`s) whose inputs reach values hundreds of times larger than the same
projection's in other layers; their step is then so coarse that ordinary inputs round to zero, and the
model's perplexity can double. A calibration run cannot fix that by itself, so it says which layers they
are and what to do, in the log and in quant_report.json (section `activation_outliers`).

Peers are the linears with the same name once layer indices are removed (`model.layers.*.mlp.down_proj`);
a layer is flagged when its calibrated step is at least OUTLIER_FACTOR times the median step of its peers
(at least MIN_PEERS of them, so a role present in two layers is not judged).
"""

from __future__ import annotations

import re
import statistics
from dataclasses import asdict, dataclass

OUTLIER_FACTOR = 30.0
MIN_PEERS = 3
REPORT_SECTION = "activation_outliers"
ADVICE = ("quantize these inputs dynamically (act scope per_token), smooth them first (iter_smooth / "
          "flex_smooth_quant with up-down subgraphs), or calibrate with method histogram (clipping search)")


@dataclass(frozen=True)
class ActivationOutlier:
    name: str
    role: str
    step: float
    peer_median_step: float
    peers: int

    @property
    def factor(self) -> float:
        return self.step / self.peer_median_step

    def message(self) -> str:
        return (f"{self.name}: static activation step {self.step:.4g} is {self.factor:.0f}x the median of its "
                f"{self.peers} peers ({self.role}, {self.peer_median_step:.4g}); per-tensor int8 will flatten "
                f"its ordinary inputs")

    def report_entry(self) -> dict:
        return {**asdict(self), "factor": round(self.factor, 2)}


def role_of(name: str) -> str:
    """The layer's name with every numeric path component replaced by `*`."""
    return re.sub(r"(?<=\.)\d+(?=\.|$)", "*", name)


def find_outliers(steps: dict[str, float], factor: float = OUTLIER_FACTOR) -> list[ActivationOutlier]:
    """Layers whose static step is `factor`x or more the median of their role's other layers."""
    by_role: dict[str, dict[str, float]] = {}
    for name, step in steps.items():
        by_role.setdefault(role_of(name), {})[name] = step
    outliers = []
    for role, members in by_role.items():
        if len(members) <= MIN_PEERS:
            continue
        for name, step in members.items():
            median = statistics.median(v for n, v in members.items() if n != name)
            if median > 0 and step >= factor * median:
                outliers.append(ActivationOutlier(name, role, step, median, len(members) - 1))
    return sorted(outliers, key=lambda o: -o.factor)
