"""The linear layer after quantization, its calibrating predecessor, and the per-config quantizer that makes both.

`LinearQuantizer` is what one `linear_quant` qconfig does to a layer: a pluggable weight method
(`methods.WEIGHT_QUANTIZERS`) and a pluggable activation kind (float, dynamic, or static with an observer).
Layers that need no data are quantized at once (`quantize`). The others get a `CalibratingLinear` for the
unit's single calibration forward, which feeds a static observer and/or the GPTQ Hessian, and is turned
into the final `QuantizedLinear` afterwards (`finish`).

`QuantizedLinear` keeps exactly what a saver needs (the weight container, the activation module with its
parameters, the bias, the export tag) and simulates the deployed arithmetic in float so later units
calibrate on quantized outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modelslim_core.errors import ConfigError
from modelslim_core.protocol.qconfig import LinearQConfig
from modelslim_core.quant.gptq import GramCache, HessianAccumulator
from modelslim_core.quant.methods import build_dynamic_act, build_observer, build_static_act, build_weight_quantizer, is_static
from modelslim_core.quant.packing import layout_problems
from modelslim_core.quant.layer_stats import WeightError, measure_weight_error
from modelslim_core.quant.row_blocks import quantize_by_rows
from modelslim_core.runtime.observation import statistics_paused


#: A dequantized weight up to this size (in float32) is kept between calls until `release_dequantized`: a small
#: linear's per-call dequantization costs more than its copy (the demo's samples are short), while a large
#: one's copy is the memory that holding weights in the model's dtype saves.
DEQUANTIZED_CACHE_BYTES = 4 * 2**20


def dequantized_weight(module: nn.Module, qweight: nn.Module) -> torch.Tensor:
    """`qweight` in float: cached on `module` (its `_dequantized` buffer) when small, else made per call."""
    cached = module._dequantized
    if cached is not None:
        return cached
    weight = qweight.dequantize()
    if weight.numel() * weight.element_size() <= DEQUANTIZED_CACHE_BYTES:
        module._dequantized = weight
    return weight


def release_dequantized(root: nn.Module) -> None:
    """Drop the small dequantized copies cached under `root` (a unit, once it is processed)."""
    for module in root.modules():
        if getattr(module, "_dequantized", None) is not None:
            module._dequantized = None


def act_kind(qconfig: LinearQConfig) -> str:
    """'float' (weight-only), 'dynamic' (computed per token/block at run time) or 'static' (calibrated)."""
    if qconfig.act.dtype == "float":
        return "float"
    return "static" if is_static(qconfig.act) else "dynamic"


class QuantizedLinear(nn.Module):
    """A quantized linear: a weight container, an activation module and the float bias, simulated in float."""

    replaces_linear = True

    def __init__(self, export_type: str, weight: nn.Module, act: nn.Module, bias: torch.Tensor | None):
        super().__init__()
        self.export_type = export_type
        self.qweight = weight
        self.act = act
        self.out_features, self.in_features = weight.shape
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("_dequantized", None, persistent=False)  # see dequantized_weight

    @property
    def group_size(self) -> int:
        """What the checkpoint's global `group_size` records for this layer (0: not grouped)."""
        return self.qweight.group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A large weight is dequantized per call: a unit's quantized linears would otherwise all hold float32
        # copies at once (twice a bf16 unit); its float weight exists only while this linear computes.
        x = self.act(x)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, dequantized_weight(self, self.qweight).to(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, {self.export_type}"


class LinearQuantizer:
    """Everything one `linear_quant` qconfig does to a linear; built once per processor."""

    def __init__(self, qconfig: LinearQConfig, yaml_path: str = "qconfig"):
        self.qconfig = qconfig
        self.yaml_path = yaml_path
        self.export_type = qconfig.export_type
        self.weight = build_weight_quantizer(qconfig.weight)
        self.kind = act_kind(qconfig)

    @property
    def needs_data(self) -> bool:
        """Static activations and data-dependent weight methods (GPTQ) need the calibration forward."""
        return self.kind == "static" or self.weight.needs_data

    def check(self, name: str, linear: nn.Linear) -> None:
        """Refuse, before any work, a layer whose shape this config cannot quantize or save."""
        out, inp = linear.out_features, linear.in_features
        problems = self.weight.shape_problems(out, inp) + layout_problems(self.export_type, name, out, inp)
        if problems:
            raise ConfigError(
                f"{self.yaml_path}: {name} ([{out}, {inp}]) cannot be quantized as {self.export_type}: {'; '.join(problems)}.",
                "exclude this layer from that linear_quant, or choose a group size / scheme that fits its shape.",
            )

    def quantize_weight(self, name: str, linear: nn.Linear) -> nn.Module:
        """The weight container of a data-free weight method (minmax, ssz, fp8, MX); row-independent methods
        run a block of rows at a time, so float32 copies of a large weight never exist whole."""
        if self.weight.rows_independent:
            return quantize_by_rows(lambda rows: self.weight.quantize(rows, name=name), linear.weight.detach())
        return self.weight.quantize(linear.weight, name=name)

    def quantize_weight_measured(self, name: str, linear: nn.Linear, debug: bool = False) -> tuple[nn.Module, WeightError]:
        """`quantize_weight` and its weight error; row-independent methods measure each row block while they
        quantize it (one float32 pass over the weight instead of a second one after, layer_stats.py)."""
        weight = linear.weight.detach()
        if not self.weight.rows_independent:
            qweight = self.weight.quantize(linear.weight, name=name)
            return qweight, measure_weight_error(weight, qweight, debug)
        measured = WeightError(debug=debug)
        qweight = quantize_by_rows(lambda rows: self.weight.quantize_measured(rows, measured, name=name), weight)
        return qweight, measured

    def quantize(self, name: str, linear: nn.Linear, qweight: nn.Module | None = None) -> QuantizedLinear:
        """A data-free layer, quantized at once (`qweight`: its weight container, if already computed)."""
        qweight = self.quantize_weight(name, linear) if qweight is None else qweight
        return QuantizedLinear(self.export_type, qweight, build_dynamic_act(self.qconfig.act), linear.bias)

    def calibrating(
        self, name: str, linear: nn.Linear, cache: GramCache | None = None, qweight: nn.Module | None = None
    ) -> "CalibratingLinear":
        """A calibrating stand-in; linears of one unit that share `cache` share the Hessian work of equal inputs.
        `qweight`: the data-free weight container, if already computed (e.g. by another rank)."""
        return CalibratingLinear(name, linear, self, cache, qweight)


class CalibratingLinear(nn.Module):
    """A linear during its unit's calibration forward.

    It feeds the static observer (if any) with its float inputs, and the GPTQ Hessian (if any) with its
    inputs as the deployed activation quantizer will see them (dynamic quantization applied; static
    activations are still float at this point). Its output uses the quantized weight when the weight
    method is data-free, else the float weight, which GPTQ has not replaced yet.
    """

    replaces_linear = True
    #: It collects statistics from its inputs: MoE layers then feed it every token, not only routed ones.
    observes_inputs = True
    #: Its statistics are recorded inside `forward` (Processor.forward_needs_only: done once it has returned).
    records_in_forward = True

    def __init__(
        self,
        name: str,
        linear: nn.Linear,
        quantizer: LinearQuantizer,
        cache: GramCache | None = None,
        qweight: nn.Module | None = None,
    ):
        super().__init__()
        self.name = name
        self.quantizer = quantizer
        act_qconfig = quantizer.qconfig.act
        self.observer = build_observer(act_qconfig) if quantizer.kind == "static" else None
        self.act = build_dynamic_act(act_qconfig) if quantizer.kind != "static" else nn.Identity()
        self.bias = None if linear.bias is None else linear.bias.detach()
        self.device = linear.weight.device
        if quantizer.weight.needs_data:
            self.qweight = None
            self.hessian: HessianAccumulator | None = HessianAccumulator(linear.in_features, self.device, cache)
            # The float weight as stored (the model's dtype): upcast per call, solved by GPTQ in float32.
            self.register_buffer("weight", linear.weight.detach())
        else:
            self.qweight = quantizer.quantize_weight(name, linear) if qweight is None else qweight
            self.hessian = None
            self.register_buffer("weight", None)  # dequantized per call or cached when small (dequantized_weight)
        self.register_buffer("_dequantized", None, persistent=False)
        self.tokens = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        observing = not statistics_paused()
        if self.observer is not None and observing:
            self.observer.update(x)
        raw, x = x, self.act(x)
        if self.hessian is not None and observing:
            self.hessian.update(x, key=raw)
        if observing:
            self.tokens += x.numel() // x.shape[-1]
        bias = None if self.bias is None else self.bias.to(x.dtype)
        weight = self.weight if self.qweight is None else dequantized_weight(self, self.qweight)
        return F.linear(x, weight.to(device=x.device, dtype=x.dtype), bias)

    @property
    def calibrated(self) -> bool:
        return self.tokens > 0

    def finish(self, qweight: nn.Module | None = None) -> QuantizedLinear:
        """The final quantized layer: calibrated activation parameters and (for GPTQ) the weight quantized now,
        unless `qweight` was already solved together with linears sharing this Hessian."""
        act = self.act
        if self.observer is not None:
            act = build_static_act(self.quantizer.qconfig.act, self.observer, self.device)
        qweight = qweight if qweight is not None else self.qweight
        if qweight is None:
            qweight, = self.quantizer.weight.quantize_together([self.weight], self.hessian.take_hessian(),
                                                               [self.name], overwrite_hessian=True)
        return QuantizedLinear(self.quantizer.export_type, qweight, act, self.bias)


def solve_shared_hessians(calibrating: list[CalibratingLinear]) -> list[nn.Module | None]:
    """GPTQ weights of consecutive calibrating linears that accumulated one input stream (q/k/v, gate/up),
    solved together; None for the others, which `finish` solves on their own."""
    solved: list[nn.Module | None] = [None] * len(calibrating)
    start = 0
    while start < len(calibrating):
        first, end = calibrating[start], start + 1
        while end < len(calibrating) and _shares_hessian(calibrating[end], first):
            end += 1
        if end - start > 1:
            run = calibrating[start:end]
            hessian = first.hessian.take_hessian(*(c.hessian for c in run[1:]))
            solved[start:end] = first.quantizer.weight.quantize_together(
                [c.weight for c in run], hessian, [c.name for c in run], overwrite_hessian=True)
            del hessian
        start = end
    return solved


def _shares_hessian(candidate: CalibratingLinear, first: CalibratingLinear) -> bool:
    return (first.hessian is not None and candidate.hessian is not None and candidate.quantizer is first.quantizer
            and candidate.hessian.shares_inputs_with(first.hessian) and candidate.device == first.device)
