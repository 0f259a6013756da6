"""A linear during its unit's calibration forward for pruning: it computes in float and records its inputs.

ADMM needs XᵀX of the layer's real calibration inputs and the W16A16S compression each input channel's RMS
(diag(XᵀX)/tokens); both come from the GPTQ Gram machinery, so q/k/v (and gate/up), which read one tensor,
share one product. An optional static-activation observer sees the same inputs (W8A8S calibrates its input
range in the same forward).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modelslim_core.quant.gptq import GramCache, HessianAccumulator
from modelslim_core.quant.methods import StaticObserver


class InputStatsLinear(nn.Module):
    replaces_linear = True

    def __init__(self, linear: nn.Linear, cache: GramCache | None = None, observer: StaticObserver | None = None):
        super().__init__()
        self.register_buffer("weight", linear.weight.detach())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())
        self.gram = HessianAccumulator(linear.in_features, linear.weight.device, cache)
        self.observer = observer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observer is not None:
            self.observer.update(x)
        self.gram.update(x, key=x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)

    @property
    def tokens(self) -> int:
        return self.gram.tokens

    def input_rms(self) -> torch.Tensor:
        """Root-mean-square of each input channel over the calibration tokens, [in]."""
        return torch.sqrt(torch.diag(self.gram.sum).clamp(min=0) / max(self.tokens, 1))
