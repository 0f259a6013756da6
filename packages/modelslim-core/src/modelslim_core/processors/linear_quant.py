"""`linear_quant`: quantize the weights (and activations) of matching linear layers.

The first `linear_quant` that matches a layer wins; a later one that also matches is skipped with a
warning (two quantization settings for one layer is always a config mistake). Weight-only and dynamic
schemes are data-free and done before any forward; static activation ranges are measured during the
unit's single calibration forward.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import nn

from modelslim_core.errors import DatasetError
from modelslim_core.protocol.qconfig import LinearQConfig
from modelslim_core.quant.quantized_linear import (
    ObservedLinear,
    QuantizedWeight,
    act_kind,
    quantize_linear_data_free,
    quantize_weight,
)
from modelslim_core.quant.schemes import BITS
from modelslim_core.runtime.distributed import computed_once
from modelslim_core.runtime.matching import LayerSelection
from modelslim_core.runtime.processor import Processor, ProcessorConfig
from modelslim_core.runtime.unit import LinearSite, Unit

logger = logging.getLogger(__name__)

class LinearQuantConfig(ProcessorConfig, LayerSelection):
    type: Literal["linear_quant"] = "linear_quant"
    qconfig: LinearQConfig

    def export_types(self) -> frozenset[str]:
        return frozenset({self.qconfig.export_type})


class LinearQuantProcessor(Processor):
    config_class = LinearQuantConfig
    config: LinearQuantConfig

    def __init__(self, config: LinearQuantConfig, context):
        super().__init__(config, context)
        self.filter = config.name_filter()
        self.kind = act_kind(config.qconfig)
        self.export_type = config.qconfig.export_type
        self._observed: list[tuple[LinearSite, ObservedLinear]] = []

    @classmethod
    def needs_data(cls, config: LinearQuantConfig) -> bool:
        return act_kind(config.qconfig) == "static"

    @classmethod
    def supports_distributed(cls, config: LinearQuantConfig) -> bool:
        return True  # minmax: ranges are all-reduced, weights computed once and broadcast

    def _selected_sites(self, unit: Unit) -> list[LinearSite]:
        selected = []
        for site in self.context.adapter.linear_sites(unit):
            if not self.filter(site.name):
                continue
            if not isinstance(site.module, nn.Linear):
                logger.warning(
                    "%s is matched by linear_quant (%s) but was already quantized by an earlier processor; "
                    "the earlier setting is kept.",
                    site.name,
                    self.export_type,
                )
                continue
            selected.append(site)
        return selected

    def _weight(self, index: int, linear: nn.Linear) -> QuantizedWeight:
        """The quantized weight, computed by one data-parallel rank and shared with the others."""
        weight = linear.weight
        templates = [torch.empty(weight.shape, dtype=torch.int8), torch.empty(weight.shape[0]), torch.empty(weight.shape[0])]

        def compute() -> list[torch.Tensor]:
            quantized = quantize_weight(weight, self.config.qconfig)
            return [quantized.codes, quantized.scale, quantized.offset]

        codes, scale, offset = computed_once(index, compute, templates)
        device = weight.device
        return QuantizedWeight(codes.to(device), scale.to(device), offset.to(device), BITS[self.config.qconfig.weight.dtype])

    def preprocess(self, unit: Unit) -> None:
        self._observed = []
        for index, site in enumerate(self._selected_sites(unit)):
            weight = self._weight(index, site.module)
            if self.kind == "static":
                observed = ObservedLinear(site.module, self.config.qconfig, self.export_type, weight)
                site.replace(observed)
                self._observed.append((site, observed))
            else:
                site.replace(quantize_linear_data_free(site.module, self.config.qconfig, weight))

    def needs_forward(self, unit: Unit) -> bool:
        return bool(self._observed)

    def postprocess(self, unit: Unit) -> None:
        for _, observed in self._observed:
            observed.observer.synchronize()  # a collective: every rank, same order
        for site, observed in self._observed:
            if not observed.calibrated:
                raise DatasetError(
                    f"{site.name} received no calibration data, so its static activation range is unknown.",
                    "use a dynamic (per_token) activation scheme for it, or calibration data that reaches it.",
                )
            site.replace(observed.finish())
        self._observed = []

    def state_dict(self) -> dict:
        return {"used_patterns": self.filter.used_patterns}

    def load_state_dict(self, state: dict) -> None:
        self.filter.mark_used(state.get("used_patterns", []))

    def post_run(self) -> None:
        self.filter.warn_unmatched("linear_quant")
