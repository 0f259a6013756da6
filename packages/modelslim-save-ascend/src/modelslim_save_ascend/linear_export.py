"""The tensors each quantized linear contributes to an ascendv1 checkpoint (shared/spec/format-and-runners.md §1.5–1.6).

One function per export tag; each returns `(suffix, tensor, tag)` triples in the order they are written.
Names, dtypes and shapes here are the wire format vLLM-Ascend loads, so they never change silently.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from modelslim_core.quant.quantized_linear import QuantizedLinear

Exported = list[tuple[str, torch.Tensor, str]]


@dataclass(frozen=True)
class ExportDtypes:
    """The dtypes a format writes: float tensors in the source model's dtype (None: as they are), and
    `deq_scale` either as float32 or as the float32 bit pattern widened to int64 (what fp16 kernels read)."""

    source: torch.dtype | None
    deq_scale_float32: bool


def deq_scale_tensor(deq_scale: torch.Tensor, as_float32: bool) -> torch.Tensor:
    """float32, or the float32 bit pattern widened to int64."""
    deq_scale = deq_scale.float().contiguous()
    if as_float32:
        return deq_scale
    return deq_scale.view(torch.int32).to(torch.int64)


def quant_bias_tensor(layer: QuantizedLinear, deq_scale: torch.Tensor) -> torch.Tensor:
    """round(bias / deq_scale − input_offset · Σ_k W_q[n, k]) as int32: folds bias and zero point into the int32 sum."""
    bias = layer.bias.float() if layer.bias is not None else torch.zeros(layer.out_features)
    row_sums = layer.weight_codes.to(torch.int64).sum(dim=1).double()
    folded = bias.double() / deq_scale.double() - layer.input_offset.double() * row_sums
    return torch.round(folded).to(torch.int32)


def _float_bias(layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
    if layer.bias is None:
        return []
    return [("bias", layer.bias.to(dtypes.source or layer.bias.dtype), "FLOAT")]


def _weight_scale_offset(layer: QuantizedLinear, tag: str) -> Exported:
    return [
        ("weight_scale", layer.weight_scale.float().reshape(-1, 1), tag),
        ("weight_offset", layer.weight_offset.float().reshape(-1, 1), tag),
    ]


def export_w8a8(layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
    deq_scale = layer.input_scale.float() * layer.weight_scale.float()
    bias = layer.bias.float() if layer.bias is not None else torch.zeros(layer.out_features)
    return [
        ("weight", layer.weight_codes.to(torch.int8), "W8A8"),
        ("quant_bias", quant_bias_tensor(layer, deq_scale), "W8A8"),
        ("input_scale", layer.input_scale.float().reshape(1), "W8A8"),
        ("input_offset", layer.input_offset.float().reshape(1), "W8A8"),
        ("deq_scale", deq_scale_tensor(deq_scale, dtypes.deq_scale_float32), "W8A8"),
        ("bias", bias, "FLOAT"),
    ]


def export_w8a8_dynamic(layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
    weight = [("weight", layer.weight_codes.to(torch.int8), "W8A8_DYNAMIC")]
    return weight + _weight_scale_offset(layer, "W8A8_DYNAMIC") + _float_bias(layer, dtypes)


def export_w8a16(layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
    weight = [("weight", layer.weight_codes.to(torch.int8), "W8A16")]
    return weight + _weight_scale_offset(layer, "W8A16") + _float_bias(layer, dtypes)


EXPORTERS: dict[str, Callable[[QuantizedLinear, ExportDtypes], Exported]] = {
    "W8A8": export_w8a8,
    "W8A8_DYNAMIC": export_w8a8_dynamic,
    "W8A16": export_w8a16,
}
