"""`linear_quant`: quantize the weights (and activations) of matching linear layers.

The first `linear_quant` that matches a layer wins; a later one that also matches is skipped with a
warning (two quantization settings for one layer is always a config mistake). Layers whose scheme is
data-free (weight-only or dynamic activations with minmax/ssz weights) are quantized in `preprocess`,
before any forward. Static activation ranges and GPTQ Hessians are collected during the unit's single
calibration forward and turned into quantized layers in `postprocess`; because GPTQ's calibration forward
ran with float weights, the unit is then run once more so the next unit calibrates on quantized outputs.
"""

from __future__ import annotations

import logging
from typing import Literal

from torch import nn

from modelslim_core.errors import DatasetError
from modelslim_core.protocol.qconfig import LinearQConfig
from modelslim_core.quant.gptq import GramCache
from modelslim_core.quant.layer_stats import record_activation, record_weight
from modelslim_core.quant.minmax import MinMaxObserver
from modelslim_core.quant.quantized_linear import CalibratingLinear, LinearQuantizer
from modelslim_core.runtime.matching import LayerSelection, TracksPatternUse
from modelslim_core.runtime.processor import Processor, ProcessorConfig
from modelslim_core.runtime.unit import LinearSite, Unit

logger = logging.getLogger(__name__)

#: Weight methods that need no calibration data: every data-parallel rank computes the same result.
DATA_FREE_WEIGHT_METHODS = ("minmax", "ssz")


class LinearQuantConfig(ProcessorConfig, LayerSelection):
    type: Literal["linear_quant"] = "linear_quant"
    qconfig: LinearQConfig

    def export_types(self) -> frozenset[str]:
        return frozenset({self.qconfig.export_type})


class LinearQuantProcessor(TracksPatternUse, Processor):
    config_class = LinearQuantConfig
    config: LinearQuantConfig

    def __init__(self, config: LinearQuantConfig, context):
        super().__init__(config, context)
        self.filter = config.name_filter()
        self.quantizer = LinearQuantizer(config.qconfig, f"{config.yaml_path}.qconfig")
        self._calibrating: list[tuple[LinearSite, CalibratingLinear]] = []
        self._stale = False
        self._grams = GramCache()

    @classmethod
    def needs_data(cls, config: LinearQuantConfig) -> bool:
        return LinearQuantizer(config.qconfig).needs_data

    @classmethod
    def supports_distributed(cls, config: LinearQuantConfig) -> bool:
        """Data-free weight methods and minmax activation ranges (all-reduced); not GPTQ or histogram."""
        return config.qconfig.weight.method in DATA_FREE_WEIGHT_METHODS and config.qconfig.act.method in ("none", "minmax")

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
                    self.quantizer.export_type,
                )
                continue
            self.quantizer.check(site.name, site.module)
            selected.append(site)
        return selected

    def preprocess(self, unit: Unit) -> None:
        self._calibrating = []
        self._stale = False
        recorder = self.context.recorder
        export_type = self.quantizer.export_type
        for site in self._selected_sites(unit):
            if self.quantizer.needs_data:
                calibrating = self.quantizer.calibrating(site.name, site.module, self._grams)
                if calibrating.qweight is not None:  # data-free weight: its error is known now
                    record_weight(recorder, site.name, export_type, site.module.weight, calibrating.qweight)
                site.replace(calibrating)
                self._calibrating.append((site, calibrating))
            else:
                quantized = self.quantizer.quantize(site.name, site.module)
                record_weight(recorder, site.name, export_type, site.module.weight, quantized.qweight)
                site.replace(quantized)

    def needs_forward(self, unit: Unit) -> bool:
        return bool(self._calibrating)

    def postprocess(self, unit: Unit) -> None:
        for _, calibrating in self._calibrating:
            if isinstance(calibrating.observer, MinMaxObserver):
                calibrating.observer.synchronize()  # a collective: every rank, same order
        for site, calibrating in self._calibrating:
            if not calibrating.calibrated:
                raise DatasetError(
                    f"{site.name} received no calibration data, so its {self.quantizer.export_type} parameters "
                    "(static activation range or GPTQ Hessian) cannot be computed.",
                    "use calibration data that reaches it, or a data-free scheme for it (dynamic per_token "
                    "activations with minmax or ssz weights).",
                )
            quantized = calibrating.finish()
            if calibrating.qweight is None:  # GPTQ: quantized only now, from the float weight it kept
                record_weight(self.context.recorder, site.name, self.quantizer.export_type, calibrating.weight,
                              quantized.qweight)
            record_activation(self.context.recorder, site.name, calibrating.tokens, quantized.act)
            site.replace(quantized)
        self._grams.clear()
        self._stale = bool(self._calibrating) and self.quantizer.weight.needs_data
        self._calibrating = []

    def outputs_stale(self, unit: Unit) -> bool:
        return self._stale
