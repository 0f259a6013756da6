"""The interface every weight quantization method implements.

A method turns a float `[out, in]` weight into one of the containers of `weight_formats.py`. Data-free
methods (minmax, ssz) need nothing else and run before any calibration forward; data-dependent ones
(GPTQ) set `needs_data` and receive the Hessian of the layer's calibration inputs, collected during the
unit's single calibration forward. `shape_problems` lets a run refuse a layer up front (e.g. a group size
that does not divide its input dim) with a message naming the layer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import nn

from modelslim_core.protocol.qconfig import QConfig
from modelslim_core.quant.layer_stats import WeightError
from modelslim_core.quant.schemes import AUTO_GROUP_SIZE, adaptive_group_size


class WeightQuantizer(ABC):
    """One weight quantization method, configured by the weight half of a qconfig."""

    needs_data: ClassVar[bool] = False
    #: Each output row's codes and parameters depend on that row alone, so a large weight may be quantized a
    #: block of rows at a time with a bit-identical result (row_blocks.py). False where rows interact (SSZ stops
    #: when every row has converged; GPTQ propagates errors through a shared Hessian).
    rows_independent: ClassVar[bool] = False

    def __init__(self, qconfig: QConfig):
        self.qconfig = qconfig
        group_size = qconfig.ext.get("group_size", 0)
        #: `group_size: auto`: the group size is chosen per run from the model's layers (`resolve_group_size`).
        self.adaptive_group_size = group_size == AUTO_GROUP_SIZE
        self.group_size: int = 0 if self.adaptive_group_size else group_size

    def resolve_group_size(self, input_dims: set[int]) -> int | None:
        """For `group_size: auto`: fix the group size for the layers with these input dims (None: none fits)."""
        chosen = adaptive_group_size(input_dims)
        if chosen is not None:
            self.group_size = chosen
        return chosen

    def shape_problems(self, out_features: int, in_features: int) -> list[str]:
        """Why a `[out, in]` weight cannot be quantized by this method (empty when it can)."""
        if self.group_size and in_features % self.group_size:
            return [f"ext.group_size {self.group_size} does not divide its input dimension {in_features}"]
        return []

    @abstractmethod
    def quantize(self, weight: torch.Tensor, hessian: torch.Tensor | None = None, name: str = "") -> nn.Module:
        """The quantized weight container; `hessian` is given iff `needs_data`; `name` is for messages."""

    def quantize_measured(self, weight: torch.Tensor, measured: WeightError, name: str = "") -> nn.Module:
        """`quantize(weight)` (data-free methods) with its weight error fed to `measured` (rows in order). This
        default dequantizes the result; methods that hold the float32 weight and the dequantized values anyway
        while they quantize override it to save those passes."""
        qweight = self.quantize(weight, name=name)
        w = weight.detach().float()
        measured.add(w, qweight.dequantize().to(w.device).float().sub_(w))
        return qweight

    def quantize_together(self, weights: list[torch.Tensor], hessian: torch.Tensor, names: list[str],
                          overwrite_hessian: bool = False) -> list[nn.Module]:
        """Linears that read one input (q/k/v, gate/up) and so share `hessian`; a method that can solve them in
        one go (GPTQ) overrides this. `overwrite_hessian`: the caller gives `hessian` away, a method may work on
        it in place (GPTQ does; here it is read by every linear, so it is left alone)."""
        return [self.quantize(weight, hessian, name) for weight, name in zip(weights, names, strict=True)]
