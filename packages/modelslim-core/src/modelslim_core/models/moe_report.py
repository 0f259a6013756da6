"""What the run summary says about each MoE layer: routed tokens per expert, unrouted experts, mixed types.

Silent MoE breakage (experts that never saw data, a layer whose experts a serving engine cannot run with one
kernel) is what users of other quantizers complain about most, so every MoE layer gets these lines.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from torch import nn

from modelslim_core.models.moe import PerExpertMoE

logger = logging.getLogger(__name__)


@dataclass
class RoutingStats:
    """Routing of one MoE layer over the calibration forwards of its unit."""

    name: str
    routed_tokens: list[int]
    seen_tokens: int
    all_token_tokens: int
    #: Export type of each expert linear ("FLOAT" when not quantized), by relative name `<e>.<proj>`.
    expert_types: dict[str, str] = field(default_factory=dict)

    @property
    def unrouted(self) -> list[int]:
        return [e for e, count in enumerate(self.routed_tokens) if count == 0]


def routing_stats(root: nn.Module, prefix: str) -> list[RoutingStats]:
    """The routing counters of every `PerExpertMoE` under `root` (named `prefix.<path>`)."""
    stats = []
    for path, module in root.named_modules():
        if isinstance(module, PerExpertMoE):
            name = f"{prefix}.{path}" if path else prefix
            types = {f"{e}.{proj}": getattr(getattr(expert, proj), "export_type", "FLOAT")
                     for e, expert in enumerate(module) for proj in ("gate_proj", "up_proj", "down_proj")}
            stats.append(RoutingStats(name, list(module.routed_tokens), module.seen_tokens, module.all_token_tokens, types))
    return stats


def mixed_types_warning(stats: RoutingStats) -> str | None:
    """vLLM-Ascend runs all experts of a layer with ONE MoE kernel, so their linears must share one type."""
    kinds = sorted(set(stats.expert_types.values()))
    if len(kinds) < 2:
        return None
    examples = ", ".join(f"{name}: {next(n for n, t in stats.expert_types.items() if t == name)}" for name in kinds)
    return (f"{stats.name}: its experts have different quantization types ({', '.join(kinds)}; e.g. {examples}); "
            "vLLM-Ascend loads a layer's experts with one kernel, so give every expert of a layer the same qconfig.")


def routing_report(stats: RoutingStats) -> list[str]:
    """Log lines for one MoE layer: per-expert routed token counts and what happened to never-chosen experts."""
    warning = mixed_types_warning(stats)
    if warning:
        logger.warning("%s", warning)
    if stats.seen_tokens == 0:
        return [f"{stats.name}: no calibration forward ran (data-free quantization); experts were quantized from "
                "their weights alone."]
    counts = ", ".join(f"{e}:{count}" for e, count in enumerate(stats.routed_tokens))
    lines = [f"{stats.name}: {stats.seen_tokens} tokens, routed tokens per expert {{{counts}}}"]
    unrouted = stats.unrouted
    if unrouted:
        if stats.all_token_tokens:
            how = (f"they were calibrated on all {stats.all_token_tokens} tokens (every token runs through every expert "
                   "during calibration)")
        else:
            how = "their quantization needed no calibration data (data-free scheme), so their scales come from the weights"
        lines.append(f"{stats.name}: experts {unrouted} received no routed tokens; {how}.")
    return lines
