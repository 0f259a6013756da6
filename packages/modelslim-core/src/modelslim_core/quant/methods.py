"""From a validated qconfig to the objects that do the work: the implementation side of `schemes.py`.

`schemes.py` says which (scheme, method) pairs are valid; this module says which class implements each:
weight quantizers by (dtype family, method), activation modules by kind, static observers by method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn

from modelslim_core.protocol.qconfig import QConfig
from modelslim_core.quant.activations import DynamicDualScaleMXAct, DynamicFP8Act, DynamicIntAct, DynamicMXAct, FloatAct, PdMixAct, StaticIntAct
from modelslim_core.quant.base import WeightQuantizer
from modelslim_core.quant.gptq import GPTQWeight
from modelslim_core.quant.histogram import HistogramObserver
from modelslim_core.quant.int_affine import compute_qparams
from modelslim_core.quant.minmax import MinMaxFP8Weight, MinMaxIntWeight, MinMaxMXWeight, MinMaxObserver
from modelslim_core.quant.schemes import BITS, STATIC_ACT_SCOPES
from modelslim_core.quant.mx_methods import CeilXMXWeight, DualScaleMXWeightQuantizer, FourOverSixMXWeight, MSERoundMXWeight
from modelslim_core.quant.ssz import SSZWeight

_FAMILIES = {"int8": "int", "int4": "int", "fp8_e4m3": "fp8", "mxfp8": "mx", "mxfp4": "mx", "float": "float"}

#: (dtype family, method) -> weight quantizer class.
WEIGHT_QUANTIZERS: dict[tuple[str, str], type[WeightQuantizer]] = {
    ("int", "minmax"): MinMaxIntWeight,
    ("int", "ssz"): SSZWeight,
    ("int", "gptq"): GPTQWeight,
    ("fp8", "minmax"): MinMaxFP8Weight,
    ("mx", "minmax"): MinMaxMXWeight,
    ("mx", "mse_round"): MSERoundMXWeight,
    ("mx", "ceil_x"): CeilXMXWeight,
    ("mx", "fouroversix"): FourOverSixMXWeight,
    ("mx", "dualscale"): DualScaleMXWeightQuantizer,
}


class StaticObserver(Protocol):
    batches: int

    def update(self, x: torch.Tensor) -> None: ...

    def range(self) -> tuple[torch.Tensor, torch.Tensor]: ...


#: static activation method -> observer factory.
STATIC_OBSERVERS: dict[str, Callable[[QConfig], StaticObserver]] = {
    "minmax": lambda qc: MinMaxObserver(qc.ext.get("aggregation_type", "max")),
    "histogram": lambda qc: HistogramObserver(BITS[qc.dtype], qc.symmetric),
}


def dtype_family(dtype: str) -> str:
    return _FAMILIES[dtype]


def build_weight_quantizer(qconfig: QConfig) -> WeightQuantizer:
    return WEIGHT_QUANTIZERS[(dtype_family(qconfig.dtype), qconfig.method)](qconfig)


def is_static(qconfig: QConfig) -> bool:
    """Activation parameters fixed at calibration (they need calibration data)."""
    return qconfig.dtype != "float" and qconfig.scope in STATIC_ACT_SCOPES


def build_dynamic_act(qconfig: QConfig) -> nn.Module:
    """The run-time input quantizer of a float or dynamic activation scheme."""
    family = dtype_family(qconfig.dtype)
    if family == "float":
        return FloatAct()
    if family == "fp8":
        return DynamicFP8Act()
    if family == "mx" and qconfig.scope == "dual_scale":
        return DynamicDualScaleMXAct(qconfig.ext["dual_block_size"])
    if family == "mx":
        return DynamicMXAct(qconfig.dtype)
    return DynamicIntAct(BITS[qconfig.dtype])


def build_observer(qconfig: QConfig) -> StaticObserver:
    return STATIC_OBSERVERS[qconfig.method](qconfig)


def build_static_act(qconfig: QConfig, observer: StaticObserver, device: torch.device) -> nn.Module:
    """The calibrated input quantizer: §3.1 parameters of the observer's range."""
    bits = BITS[qconfig.dtype]
    low, high = observer.range()
    scale, offset = compute_qparams(low, high, bits, qconfig.symmetric)
    act_class = PdMixAct if qconfig.scope == "pd_mix" else StaticIntAct
    return act_class(scale.to(device), offset.to(device), bits)
