"""`sparse_quant`: our modelslim_v1 pipeline for W8A8S (sparse int8 weights, static int8 activations).

The reference produces W8A8S only from its legacy v0 calibrator; this processor is our v1 equivalent,
built from the same parts as `float_sparse` and `linear_quant`. Per unit, in the unit's single
calibration forward, every selected linear records XᵀX of its float inputs and feeds the static
activation observer; afterwards its weight is pruned to `sparse_ratio` zeros by ADMM against those inputs,
the pruned weight is quantized with the qconfig's weight method (symmetric, so pruned weights are exactly
code 0 and the int8 tensor keeps the sparsity a compressor exploits), and the activation parameters come
from the observer. The layer is saved with the W8A8 tensor set (weight, quant_bias, input_scale,
input_offset, deq_scale, bias), tagged W8A8S. The unit is run again so the next unit calibrates on the
quantized outputs. Not data-parallel (the Gram matrices are not all-reduced).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from torch import nn

from modelslim_core.protocol.qconfig import LinearQConfig
from modelslim_core.processors.float_sparse import FloatSparseProcessor
from modelslim_core.quant.methods import build_observer, build_static_act
from modelslim_core.quant.quantized_linear import LinearQuantizer, QuantizedLinear
from modelslim_core.runtime.matching import LayerSelection
from modelslim_core.runtime.processor import ProcessorConfig
from modelslim_core.runtime.unit import LinearSite
from modelslim_core.sparsity.admm import admm_prune
from modelslim_core.sparsity.calibrating import InputStatsLinear

W8A8S = "W8A8S"
#: Weight methods that quantize a given (pruned) weight without data, so zeros stay zeros.
PRUNED_WEIGHT_METHODS = ("minmax", "ssz")


class SparseQuantConfig(ProcessorConfig, LayerSelection):
    type: Literal["sparse_quant"] = "sparse_quant"
    sparse_ratio: float = Field(default=0.3, ge=0, le=1, description="fraction of each layer's weights set to zero, in [0, 1]")
    qconfig: LinearQConfig

    @model_validator(mode="after")
    def _w8a8_pair(self) -> "SparseQuantConfig":
        if self.qconfig.export_type != "W8A8":
            raise ValueError(
                "qconfig must be the W8A8 pair (act int8 per_tensor minmax or histogram, weight int8 per_channel "
                f"symmetric), because W8A8S carries the W8A8 tensors; this one exports {self.qconfig.export_type}"
            )
        if self.qconfig.weight.method not in PRUNED_WEIGHT_METHODS:
            raise ValueError(
                f"qconfig.weight.method must be one of {', '.join(PRUNED_WEIGHT_METHODS)} (they quantize the pruned "
                f"weight as it is); got {self.qconfig.weight.method!r}"
            )
        return self

    def export_types(self) -> frozenset[str]:
        return frozenset({W8A8S})


class SparseQuantProcessor(FloatSparseProcessor):
    config_class = SparseQuantConfig
    config: SparseQuantConfig

    def __init__(self, config: SparseQuantConfig, context):
        super().__init__(config, context)
        self.quantizer = LinearQuantizer(config.qconfig, f"{config.yaml_path}.qconfig")

    @property
    def export_type(self) -> str:
        return W8A8S

    def calibrating(self, site: LinearSite) -> InputStatsLinear:
        self.quantizer.check(site.name, site.module)
        return InputStatsLinear(site.module, self._grams, build_observer(self.config.qconfig.act))

    def finish(self, site: LinearSite, stats: InputStatsLinear) -> nn.Module:
        pruned = admm_prune(stats.weight, stats.gram.sum, self.config.sparse_ratio)
        qweight = self.quantizer.weight.quantize(pruned, name=site.name)
        act = build_static_act(self.config.qconfig.act, stats.observer, stats.weight.device)
        return QuantizedLinear(W8A8S, qweight, act, stats.bias)
