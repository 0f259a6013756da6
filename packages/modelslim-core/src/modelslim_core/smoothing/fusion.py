"""Folding smoothing scales (and the asymmetric shift) into the weights, so the float function is unchanged.

Consumers: each weight column j is multiplied by s_j. Producer: its output channel j is divided by s_j —
a norm's weight (and bias), a linear's rows (and bias), for `ov` the v_proj rows of the KV head that the
o_proj columns read. Arithmetic is float32, then cast back to the parameter's dtype once (kept in float32
when the weights are stored below the compute dtype: runtime/storage.py).

The shift (norm-linear only, iter_smooth with `symmetric: false`) centres the norm's output: the norm
subtracts `shift` (a bias of −shift/s after scaling) and every consumer adds W·shift to its bias, using W
before scaling. Norms without a bias (RMSNorm) get one through `add_output_bias`, which keeps the norm's
own forward (its eps, its dtype handling) and adds the bias to its output; the bias is saved as
`<norm>.bias`. Linears without a bias get a zero one first.
"""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.models.subgraphs import Subgraph
from modelslim_core.runtime.storage import store
from modelslim_core.smoothing.scales import HeadGroups


def _scaled(param: torch.Tensor, factor: torch.Tensor) -> None:
    """param ← param · factor, computed in float32 (module and parameter objects stay the same)."""
    store(param, param.data.float() * factor.to(param.device))


def _add_bias_to_output(module: nn.Module, _args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output + module.bias.to(output.dtype)


def add_output_bias(module: nn.Module) -> nn.Parameter:
    """Give `module` (a norm or a linear) a zero bias that its forward adds to the output; returns it.

    `nn.Linear` and `nn.LayerNorm` already add `self.bias` when it is set; other norms (RMSNorm variants)
    get a forward hook (so their own eps and dtype handling are kept). Also used by the reference runtime to load checkpoints that carry such biases.
    """
    existing = getattr(module, "bias", None)
    if isinstance(existing, torch.Tensor):
        return existing
    weight = module.weight
    bias = nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device), requires_grad=False)
    # A module that registered `bias` as an (empty) parameter reads it in its own forward.
    native = isinstance(module, (nn.Linear, nn.LayerNorm)) or "bias" in module._parameters
    module.register_parameter("bias", bias)
    if not native:
        module.register_forward_hook(_add_bias_to_output)
    return bias


def apply_shift(subgraph: Subgraph, shift: torch.Tensor) -> None:
    """Centre a norm-linear subgraph's activations: consumers' bias += W·shift, norm output −= shift."""
    shift = shift.float()
    for linear in subgraph.targets:
        bias = add_output_bias(linear)
        store(bias, bias.data.float() + linear.weight.detach().float() @ shift.to(bias.device))
    norm_bias = add_output_bias(subgraph.source)
    store(norm_bias, norm_bias.data.float() - shift.to(norm_bias.device))


def apply_scale(subgraph: Subgraph, scale: torch.Tensor) -> None:
    """Divide the producer's output channels by `scale` and multiply the consumers' input columns by it."""
    scale = scale.float()
    for linear in subgraph.targets:
        _scaled(linear.weight, scale[None, :])
    producer_scale = HeadGroups(subgraph).per_kv(scale) if subgraph.kind == "ov" else scale
    inverse = 1.0 / producer_scale
    source = subgraph.source
    if subgraph.kind == "norm-linear":
        _scaled(source.weight, inverse)
    else:
        _scaled(source.weight, inverse[:, None])
    bias = getattr(source, "bias", None)
    if isinstance(bias, torch.Tensor):
        _scaled(bias, inverse)
