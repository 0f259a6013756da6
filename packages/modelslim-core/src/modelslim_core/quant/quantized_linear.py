"""The linear layer after quantization, and its calibrating predecessor.

`QuantizedLinear` keeps exactly what a saver needs (integer weight codes, scales, offsets, activation
parameters, bias and the export tag) and simulates the deployed arithmetic in float so later units can
calibrate on quantized outputs. `ObservedLinear` stands in for a linear whose static activation range is
still being measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modelslim_core.protocol.qconfig import LinearQConfig
from modelslim_core.quant.int_affine import compute_qparams, dequantize, fake_quantize, fake_quantize_per_token_sym, quantize
from modelslim_core.quant.minmax import MinMaxObserver, minmax_weight_qparams
from modelslim_core.quant.schemes import BITS, STATIC_ACT_SCOPES


@dataclass(frozen=True)
class QuantizedWeight:
    """Integer codes [out, in] (int8 container) with per-channel scale and offset [out] (float32)."""

    codes: torch.Tensor
    scale: torch.Tensor
    offset: torch.Tensor
    bits: int

    def dequantize(self) -> torch.Tensor:
        return dequantize(self.codes, self.scale[:, None], self.offset[:, None])


def quantize_weight(weight: torch.Tensor, qconfig: LinearQConfig) -> QuantizedWeight:
    """Quantize a [out, in] weight with the configured weight scheme (per_channel minmax)."""
    bits = BITS[qconfig.weight.dtype]
    scale, offset = minmax_weight_qparams(weight, bits, qconfig.weight.symmetric)
    codes = quantize(weight, scale[:, None], offset[:, None], bits)
    return QuantizedWeight(codes=codes, scale=scale, offset=offset, bits=bits)


def act_kind(qconfig: LinearQConfig) -> str:
    """'float' (weight-only), 'dynamic' (computed per token at run time) or 'static' (calibrated)."""
    if qconfig.act.dtype == "float":
        return "float"
    return "static" if qconfig.act.scope in STATIC_ACT_SCOPES else "dynamic"


class QuantizedLinear(nn.Module):
    """A quantized linear: integer weights plus parameters, simulated in float."""

    replaces_linear = True

    def __init__(
        self,
        export_type: str,
        weight: QuantizedWeight,
        bias: torch.Tensor | None,
        act_kind: str,
        act_bits: int = 8,
        input_scale: torch.Tensor | None = None,
        input_offset: torch.Tensor | None = None,
    ):
        super().__init__()
        self.export_type = export_type
        self.act_kind = act_kind
        self.act_bits = act_bits
        self.weight_bits = weight.bits
        self.in_features = weight.codes.shape[1]
        self.out_features = weight.codes.shape[0]
        self.register_buffer("weight_codes", weight.codes)
        self.register_buffer("weight_scale", weight.scale)
        self.register_buffer("weight_offset", weight.offset)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("input_scale", input_scale)
        self.register_buffer("input_offset", input_offset)
        # Built on first use: a data-free run never runs a forward, so it never pays for a float copy.
        self.register_buffer("_dequantized", None, persistent=False)

    @property
    def quantized_weight(self) -> QuantizedWeight:
        return QuantizedWeight(self.weight_codes, self.weight_scale, self.weight_offset, self.weight_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_kind == "static":
            x = fake_quantize(x, self.input_scale, self.input_offset, self.act_bits)
        elif self.act_kind == "dynamic":
            x = fake_quantize_per_token_sym(x, self.act_bits)
        if self._dequantized is None:
            self._dequantized = self.quantized_weight.dequantize()
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self._dequantized.to(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, {self.export_type}"


class ObservedLinear(nn.Module):
    """A linear whose static activation range is being calibrated.

    Its forward already uses the quantized weight (data-free, known up front) and float activations, so the
    outputs handed to the next unit reflect weight quantization without a second forward pass.
    """

    replaces_linear = True

    def __init__(self, linear: nn.Linear, qconfig: LinearQConfig, export_type: str, weight: QuantizedWeight | None = None):
        super().__init__()
        self.qconfig = qconfig
        self.export_type = export_type
        self.weight = weight if weight is not None else quantize_weight(linear.weight, qconfig)
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.observer = MinMaxObserver(qconfig.act.ext.get("aggregation_type", "max"))
        self.register_buffer("_dequantized", self.weight.dequantize().to(linear.weight.device), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.observer.update(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self._dequantized.to(x.dtype), bias)

    @property
    def calibrated(self) -> bool:
        return self.observer.batches > 0

    def finish(self) -> QuantizedLinear:
        """The final quantized layer with the calibrated activation parameters."""
        bits = BITS[self.qconfig.act.dtype]
        lo, hi = self.observer.range()
        scale, offset = compute_qparams(lo, hi, bits, self.qconfig.act.symmetric)
        device = self._dequantized.device
        return QuantizedLinear(
            self.export_type,
            self.weight,
            self.bias,
            "static",
            bits,
            scale.reshape(1).to(device),
            offset.reshape(1).to(device),
        )


def quantize_linear_data_free(linear: nn.Linear, qconfig: LinearQConfig, weight: QuantizedWeight | None = None) -> QuantizedLinear:
    """Quantize a linear whose activation needs no calibration (weight-only or dynamic)."""
    kind = act_kind(qconfig)
    act_bits = BITS.get(qconfig.act.dtype, 16)
    weight = weight if weight is not None else quantize_weight(linear.weight, qconfig)
    return QuantizedLinear(qconfig.export_type, weight, linear.bias, kind, act_bits)
