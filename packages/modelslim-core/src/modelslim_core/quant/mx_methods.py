"""The MX weight methods of `mx_scales.py` as weight quantizers (data-free, like minmax)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from modelslim_core.quant.base import WeightQuantizer
from modelslim_core.quant.mx import MX_FORMATS
from modelslim_core.quant.mx_scales import (
    CEIL_X_DEFAULT,
    ceil_x_candidates,
    ceil_x_quantize,
    dual_scale_quantize,
    fouroversix_quantize,
    mse_round_quantize,
)
from modelslim_core.quant.schemes import MX_BLOCK
from modelslim_core.quant.weight_formats import DualScaleMXWeight, MXWeight

logger = logging.getLogger(__name__)


class MSERoundMXWeight(WeightQuantizer):
    """MXFP8: per block the floor or ceil exponent with the lower error."""

    def quantize(self, weight: torch.Tensor, hessian: torch.Tensor | None = None, name: str = "") -> nn.Module:
        fmt = MX_FORMATS[self.qconfig.dtype]
        return MXWeight(*mse_round_quantize(weight.detach(), fmt), self.qconfig.dtype)


class CeilXMXWeight(WeightQuantizer):
    """MXFP4: E = ceil(log2(amax / c)), c fixed or searched per layer."""

    def quantize(self, weight: torch.Tensor, hessian: torch.Tensor | None = None, name: str = "") -> nn.Module:
        ext = self.qconfig.ext
        search = None
        if ext.get("enable_search", False):
            search = ceil_x_candidates(ext.get("search_min", 6.0), ext.get("search_max", 12.0), ext.get("search_step", 0.25))
        elements, exponents, chosen = ceil_x_quantize(weight.detach(), ext.get("ceil_x_value", CEIL_X_DEFAULT), search)
        if search:
            logger.debug("ceil_x %s: c = %s", name, chosen)
        return MXWeight(elements, exponents, "mxfp4")


class FourOverSixMXWeight(WeightQuantizer):
    """MXFP4: per block the scale amax/6 or amax/4, whichever has the lower error."""

    def shape_problems(self, out_features: int, in_features: int) -> list[str]:
        return [f"fouroversix needs both dimensions divisible by {MX_BLOCK}, got [{out_features}, {in_features}]"
                ] if out_features % MX_BLOCK or in_features % MX_BLOCK else []

    def quantize(self, weight: torch.Tensor, hessian: torch.Tensor | None = None, name: str = "") -> nn.Module:
        elements, exponents, share_four = fouroversix_quantize(weight.detach())
        logger.debug("fouroversix %s: %.1f%% of blocks use amax/4", name, 100 * share_four)
        return MXWeight(elements, exponents, "mxfp4")


class DualScaleMXWeightQuantizer(WeightQuantizer):
    """Dual-scale MXFP4: outer float32 scale per dual block, MXFP4 minmax inside."""

    def __init__(self, qconfig):
        super().__init__(qconfig)
        self.dual_block_size: int = qconfig.ext["dual_block_size"]

    def shape_problems(self, out_features: int, in_features: int) -> list[str]:
        if in_features % self.dual_block_size:
            return [f"ext.dual_block_size {self.dual_block_size} does not divide its input dimension {in_features}"]
        return []

    def quantize(self, weight: torch.Tensor, hessian: torch.Tensor | None = None, name: str = "") -> nn.Module:
        return DualScaleMXWeight(*dual_scale_quantize(weight.detach(), self.dual_block_size))
