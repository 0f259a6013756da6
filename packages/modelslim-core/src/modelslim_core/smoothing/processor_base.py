"""What every smoothing processor shares: config fields, subgraph selection, statistics, fusion order.

Per unit: `preprocess` selects the adapter's subgraphs of the enabled kinds whose SOURCE module matches
include/exclude (docs/algorithms.md, "Smoothing") and hooks their first consumers; the unit's single
calibration forward fills the statistics; `postprocess` combines them across ranks and lets the concrete
processor compute and fuse each subgraph's scale, deepest consumers first (`APPLY_ORDER`). Fusion in
float keeps the unit's function, so the forward's outputs remain valid inputs for the next unit.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from modelslim_core.models.moe import routes_tokens
from modelslim_core.models.subgraphs import APPLY_ORDER, SUBGRAPH_KINDS, Subgraph
from modelslim_core.runtime.matching import LayerSelection, TracksPatternUse, adapter_aliases
from modelslim_core.runtime.processor import Processor, ProcessorConfig
from modelslim_core.runtime.unit import Unit
from modelslim_core.smoothing.fusion import apply_scale, apply_shift
from modelslim_core.smoothing.stats import ChannelStats, SubgraphStatsCollector

logger = logging.getLogger(__name__)

SubgraphKindName = Literal["norm-linear", "linear-linear", "ov", "up-down"]


def open_unit_interval(value: Any) -> Any:
    """alpha / beta / scale_min: a float strictly between 0 and 1 (an int literal such as 1 is refused)."""
    if value is None:
        return value
    if not isinstance(value, float):
        raise ValueError("must be a float strictly between 0 and 1, written with a decimal point (e.g. 0.5)")
    if not 0.0 < value < 1.0:
        raise ValueError("must be strictly between 0 and 1")
    return value


class SmoothingConfig(ProcessorConfig, LayerSelection):
    """include/exclude select subgraphs by their source module (e.g. `*.post_attention_layernorm`)."""


class SubgraphKinds(SmoothingConfig):
    """`enable_subgraph_type`: which subgraph kinds the processor smooths (default all four)."""

    enable_subgraph_type: list[SubgraphKindName] = Field(default_factory=lambda: list(SUBGRAPH_KINDS))

    @field_validator("enable_subgraph_type")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("lists a subgraph type twice")
        return value


class SmoothingProcessor(TracksPatternUse, Processor):
    """Base of the smoothing processors; subclasses implement `smooth` for one subgraph."""

    config: SmoothingConfig
    #: Whether `smooth` needs every activation row (search-based methods), not just the running statistics.
    keep_rows: ClassVar[bool] = False
    #: Whether `smooth` reads `ChannelStats.mean_abs` (a float64 pass per forward call that min/max-based
    #: scales do not need).
    uses_mean_abs: ClassVar[bool] = False

    def __init__(self, config: SmoothingConfig, context):
        super().__init__(config, context)
        self.filter = config.name_filter(adapter_aliases(context))
        self._subgraphs: list[Subgraph] = []
        self._collector: SubgraphStatsCollector | None = None
        self._smoothed = 0

    def enabled_kinds(self) -> tuple[str, ...]:
        return tuple(getattr(self.config, "enable_subgraph_type", SUBGRAPH_KINDS))

    @classmethod
    def needs_data(cls, config: SmoothingConfig) -> bool:
        return True

    @classmethod
    def selection_is_local(cls, config: SmoothingConfig) -> bool:
        """A subgraph is selected by its source's name and lies inside one unit."""
        return True

    #: Whether the processor only relates a subgraph's source and consumers (closed-form scales from running
    #: statistics), so a MoE layer can be smoothed piece by piece (`Processor.handles_calibrated_pieces`).
    smooths_in_pieces: ClassVar[bool] = False

    @classmethod
    def handles_stored_weights(cls, config: SmoothingConfig) -> bool:
        """Scales come from float32 statistics and are folded through smoothing/fusion.py (`store`)."""
        return True

    @classmethod
    def handles_calibrated_pieces(cls, config: SmoothingConfig) -> bool:
        return cls.smooths_in_pieces

    def selected_subgraphs(self, unit: Unit) -> list[Subgraph]:
        """The enabled, selected subgraphs whose source and consumers all lie in `unit` (or in the piece of it)."""
        kinds = self.enabled_kinds()
        return [sg for sg in self.context.adapter.smoothing_subgraphs(unit)
                if sg.kind in kinds and self.filter(sg.source_name)
                and (unit.whole or all(unit.covers_site(name) for name in (sg.source_name, *sg.target_names)))]

    def preprocess(self, unit: Unit) -> None:
        self._subgraphs = self.selected_subgraphs(unit)
        self._collector = SubgraphStatsCollector(self._subgraphs, self.keep_rows, self.uses_mean_abs) if self._subgraphs else None

    def needs_forward(self, unit: Unit) -> bool:
        return bool(self._subgraphs)

    def postprocess(self, unit: Unit) -> None:
        if self._collector is None:
            return
        stats = self._collector.finish()  # collectives: same subgraphs, same order on every rank
        for subgraph in sorted(self._subgraphs, key=lambda sg: APPLY_ORDER.index(sg.kind)):
            seen = stats[subgraph.source_name]
            if not seen.seen:
                logger.warning("%s (%s) saw no calibration tokens; it is not smoothed.", subgraph.source_name,
                               self.config.type)
                continue
            self.smooth(subgraph, seen)
            self._smoothed += 1
        self._subgraphs, self._collector = [], None

    @abstractmethod
    def smooth(self, subgraph: Subgraph, stats: ChannelStats) -> None:
        """Compute this subgraph's scale from `stats` and fuse it into the weights (through `fuse`)."""

    def fuse(self, subgraph: Subgraph, scale: torch.Tensor, shift: torch.Tensor | None = None) -> None:
        """Fold the shift (if any) and the scale into the weights; `--debug` records them per consumer."""
        recorder = self.context.recorder
        for name in subgraph.target_names:
            recorder.debug("smooth_scales", f"{name}.scales", scale)
            if shift is not None:
                recorder.debug("smooth_scales", f"{name}.shift", shift)
        if shift is not None:
            apply_shift(subgraph, shift)
        apply_scale(subgraph, scale)

    def outputs_stale(self, unit: Unit) -> bool:
        return False  # float fusion keeps the unit's function: the forward's outputs are still right

    #: Whether the statistics hooks are all this processor's forward needs (awq also replays its blocks).
    stops_after_statistics: ClassVar[bool] = True

    def forward_needs_only(self, unit: Unit) -> list[nn.Module]:
        """The hooked first consumers, unless the unit routes tokens to experts (an expert that gets no token
        in a sample is never called, and every expert must see its tokens)."""
        if not self.stops_after_statistics or routes_tokens(unit.module):
            return []
        return [subgraph.targets[0] for subgraph in self._subgraphs]

    def state_dict(self) -> dict:
        return {**super().state_dict(), "smoothed": self._smoothed}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._smoothed = state.get("smoothed", 0)

    def post_run(self) -> None:
        super().post_run()
        if self._smoothed == 0:
            logger.warning("%s smoothed no subgraph: the model adapter declares none of the kinds %s that "
                           "include/exclude select.", self.config.type, ", ".join(self.enabled_kinds()))
        else:
            logger.info("%s smoothed %d subgraphs.", self.config.type, self._smoothed)
