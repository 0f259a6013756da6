"""`float_sparse`: ADMM pruning plus FP16 mantissa compression of matching linears, saved as W16A16S.

Per unit: every selected linear records XᵀX of its inputs during the unit's single calibration forward
(float weights); afterwards each is pruned to `sparse_ratio` zeros by ADMM against those inputs
(sparsity/admm.py), compressed to 2 mantissa bits except its most output-relevant 2%
(sparsity/fp16_compression.py), and replaced by an FP16 layer tagged W16A16S. The unit is then run again
so the next unit calibrates on the pruned outputs. The Gram matrices are not all-reduced, so the
processor refuses data-parallel runs.

W16A16S is an FP16 format (the Atlas 300I Duo it targets has no bf16): weight and bias are saved as
float16 whatever the model dtype, both tagged W16A16S.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field
from torch import nn

from modelslim_core.errors import DatasetError
from modelslim_core.quant.activations import FloatAct
from modelslim_core.quant.gptq import GramCache
from modelslim_core.quant.quantized_linear import QuantizedLinear
from modelslim_core.quant.weight_formats import FP16Weight
from modelslim_core.runtime.matching import Aliases, NameFilter, TracksPatternUse, adapter_aliases
from modelslim_core.quant.layer_stats import record_weight
from modelslim_core.runtime.processor import Processor, ProcessorConfig
from modelslim_core.runtime.unit import LinearSite, Unit
from modelslim_core.sparsity.admm import admm_prune
from modelslim_core.sparsity.calibrating import InputStatsLinear
from modelslim_core.sparsity.fp16_compression import compress_fp16, to_fp16

logger = logging.getLogger(__name__)

W16A16S = "W16A16S"


class FloatSparseConfig(ProcessorConfig):
    type: Literal["float_sparse"] = "float_sparse"
    sparse_ratio: float = Field(default=0.3, ge=0, le=1, description="fraction of each layer's weights set to zero, in [0, 1]")
    include: list[str] = Field(default_factory=list, description="linear name patterns; empty selects every linear")
    exclude: list[str] = Field(default_factory=list)

    def name_filter(self, aliases: Aliases | None = None) -> NameFilter:
        return NameFilter(self.include or ["*"], self.exclude, aliases)

    def export_types(self) -> frozenset[str]:
        return frozenset({W16A16S})

    def linear_selections(self) -> list[tuple[str, "FloatSparseConfig"]]:
        return [(self.yaml_path, self)]


class FloatSparseProcessor(TracksPatternUse, Processor):
    """Also the base of other prune-then-export processors: they change how a layer calibrates and finishes."""

    config_class = FloatSparseConfig
    config: FloatSparseConfig

    def __init__(self, config: FloatSparseConfig, context):
        super().__init__(config, context)
        self.filter = config.name_filter(adapter_aliases(context))
        self._calibrating: list[tuple[LinearSite, InputStatsLinear]] = []
        self._grams = GramCache()
        self._stale = False

    @classmethod
    def needs_data(cls, config: FloatSparseConfig) -> bool:
        return True

    @classmethod
    def supports_distributed(cls, config: FloatSparseConfig) -> bool:
        """No: each rank would prune against its own share of the inputs (the Gram is not all-reduced)."""
        return False

    # --- what subclasses change --------------------------------------------------------------------------
    def calibrating(self, site: LinearSite) -> InputStatsLinear:
        return InputStatsLinear(site.module, self._grams)

    def finish(self, site: LinearSite, stats: InputStatsLinear) -> nn.Module:
        pruned = admm_prune(stats.weight, stats.gram.sum, self.config.sparse_ratio)
        compressed = compress_fp16(pruned, stats.input_rms())
        bias = None if stats.bias is None else to_fp16(stats.bias)
        return QuantizedLinear(W16A16S, FP16Weight(compressed), FloatAct(), bias)

    @property
    def export_type(self) -> str:
        return W16A16S

    # --- lifecycle ---------------------------------------------------------------------------------------
    def preprocess(self, unit: Unit) -> None:
        self._calibrating = []
        self._stale = False
        for site in self.context.adapter.linear_sites(unit):
            if not self.filter(site.name):
                continue
            if not isinstance(site.module, nn.Linear):
                logger.warning("%s is matched by %s but was already replaced by an earlier processor; it is kept.",
                               site.name, self.config.type)
                continue
            stats = self.calibrating(site)
            site.replace(stats)
            self._calibrating.append((site, stats))

    def needs_forward(self, unit: Unit) -> bool:
        return bool(self._calibrating)

    def postprocess(self, unit: Unit) -> None:
        for site, stats in self._calibrating:
            if stats.tokens == 0:
                raise DatasetError(
                    f"{site.name} received no calibration data, so {self.config.type} cannot prune it "
                    f"({self.export_type} needs the layer's real inputs).",
                    f"use calibration data that reaches it, or exclude it in {self.config.yaml_path}.exclude.",
                )
            finished = self.finish(site, stats)
            record_weight(self.context.recorder, site.name, self.export_type, stats.weight, finished.qweight)
            site.replace(finished)
        self._grams.clear()
        self._stale = bool(self._calibrating)
        self._calibrating = []

    def outputs_stale(self, unit: Unit) -> bool:
        return self._stale
