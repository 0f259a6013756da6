"""How much each quantizable unit (a linear, an attention block or a decoder layer) costs the model.

Two models share one architecture: F, the float model after the scheme's function-preserving transforms
(smoothing, rotation) and Q, the same run with every linear quantized, rebuilt by the reference runtime
with the Ascend integer semantics. Because the transforms are already in F, a linear of Q and the linear of
F with the same name compute the same function up to quantization, so they can be swapped one unit at a
time. Per unit:

- `mse_layer_wise`: relative MSE of the unit's quantized linears against F's on F's own inputs (local);
- `mse_model_wise`: the end-to-end divergence of F with only this unit quantized (KL of the next-token
  distributions for causal LMs, relative MSE of the final hidden state otherwise);
- `float_gain`: how much of Q's divergence goes away when only this unit is left float;
- `kurtosis`, `std`, `quantile`: statistics of the unit's float inputs (largest over its linears).

Everything runs from one forward of F with hooks, plus two forwards per unit over a few samples; a MoE
layer's routed experts form one unit, so they are measured and rolled back together.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


QUANTILE = 0.9999
_BLOCK = re.compile(r"^(.*?\.layers\.\d+)\.")
_ATTENTION = re.compile(r"^(.*?\.(?:self_attn|attention|attn|cross_attn))\.")
_EXPERT = re.compile(r"^(.*\.experts)\.\d+\.")
_EXPERT_INDEX = re.compile(r"\.experts\.\d+\.")


@dataclass
class Unit:
    """What is measured and rolled back together: a name, the exclude pattern and the linears it covers."""

    name: str
    pattern: str
    linears: list[str] = field(default_factory=list)


def group_units(linears: list[str], scope: str) -> list[Unit]:
    """Units in model order. `layer`: one per decoder block (`<block>.*`); `attn`: one per attention module;
    `linear`: one per linear, except that a layer's routed experts form one unit (`...experts.*`): the
    serving engine runs them with one MoE kernel, so they are quantized, or left float, together."""
    units: dict[str, Unit] = {}
    for name in linears:
        if scope == "layer":
            match = _BLOCK.match(name)
            key, pattern = (match.group(1), f"{match.group(1)}.*") if match else (name, name)
        elif scope == "attn":
            match = _ATTENTION.match(name)
            if match is None:
                continue
            key, pattern = match.group(1), f"{match.group(1)}.*"
        else:
            match = _EXPERT.match(name)
            key = pattern = f"{match.group(1)}.*" if match else name
        units.setdefault(key, Unit(key, pattern)).linears.append(name)
    return list(units.values())


def unit_layers(unit: Unit) -> list[str]:
    """The unit's linears with expert indices collapsed to 0 (one name per projection, not one per expert):
    enough to tell which processor items select the unit, small enough to keep in tune's history."""
    return list(dict.fromkeys(_EXPERT_INDEX.sub(".experts.0.", name) for name in unit.linears))


@contextlib.contextmanager
def swapped(model: nn.Module, replacements: dict[str, nn.Module]) -> Iterator[nn.Module]:
    """`model` with the named submodules replaced, restored on exit."""
    originals = {}
    try:
        for name, module in replacements.items():
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            originals[name] = (parent, attr, getattr(parent, attr))
            setattr(parent, attr, module)
        yield model
    finally:
        for parent, attr, module in originals.values():
            setattr(parent, attr, module)


class _InputStats:
    """Running raw moments of one linear's inputs (kurtosis, std) and the largest |x| quantile seen."""

    def __init__(self) -> None:
        self.n = 0
        self.sums = [0.0, 0.0, 0.0, 0.0]
        self.quantile = 0.0

    def update(self, x: torch.Tensor) -> None:
        values = x.detach().double().flatten()
        self.n += values.numel()
        power = values.clone()
        for i in range(4):
            self.sums[i] += float(power.sum())
            if i < 3:
                power.mul_(values)
        sample = values.abs()[:: max(1, values.numel() // 2**20)].float()
        self.quantile = max(self.quantile, float(torch.quantile(sample, QUANTILE)))

    def result(self) -> dict[str, float]:
        n = max(self.n, 1)
        m1, m2, m3, m4 = (s / n for s in self.sums)
        variance = max(m2 - m1 * m1, 1e-30)
        central4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4
        return {"kurtosis": central4 / variance**2, "std": math.sqrt(variance), "quantile": self.quantile}


def _output(result) -> torch.Tensor:
    return result.logits if getattr(result, "logits", None) is not None else result.last_hidden_state


class SensitivityMeter:
    """Measures units of `quant_model` (kernels) against `float_model` (same names, float linears)."""

    def __init__(self, float_model: nn.Module, quant_model: nn.Module, kernels: dict[str, nn.Module],
                 samples: list[dict[str, torch.Tensor]]):
        self.float_model, self.quant_model, self.samples = float_model, quant_model, samples
        self.kernels = kernels
        self.float_linears = {name: float_model.get_submodule(name) for name in kernels}
        self.local: dict[str, float] = {}
        self.inputs: dict[str, dict[str, float]] = {}
        self.reference: list[torch.Tensor] = []
        self.causal = True

    @torch.no_grad()
    def measure_reference(self) -> None:
        """One forward of F: its outputs (kept for the end-to-end divergences), local errors, input stats."""
        err = {name: 0.0 for name in self.kernels}
        ref = {name: 0.0 for name in self.kernels}
        stats = {name: _InputStats() for name in self.kernels}

        def hook(name):
            def record(_module, args, out):
                x = args[0]
                stats[name].update(x)
                diff = self.kernels[name](x).double() - out.double()
                err[name] += float(diff.pow(2).sum())
                ref[name] += float(out.double().pow(2).sum())
            return record

        handles = [self.float_linears[name].register_forward_hook(hook(name)) for name in self.kernels]
        try:
            for sample in self.samples:
                result = self.float_model(**sample)
                self.causal = getattr(result, "logits", None) is not None
                self.reference.append(_output(result).float())
        finally:
            for handle in handles:
                handle.remove()
        self.local = {name: err[name] / max(ref[name], 1e-30) for name in self.kernels}
        self.inputs = {name: stats[name].result() for name in self.kernels}

    @torch.no_grad()
    def divergence(self, model: nn.Module) -> float:
        """Mean per-token KL(F ‖ model) (causal LMs) or relative MSE of the final hidden state (others), in
        float64: a unit's share is often ~1e-8, below float32's rounding of a log-softmax over the vocabulary."""
        total, count = 0.0, 0.0
        for sample, reference in zip(self.samples, self.reference):
            out = _output(model(**sample)).double()
            if self.causal:
                log_p, log_q = F.log_softmax(reference.double(), dim=-1), F.log_softmax(out, dim=-1)
                total += float((log_p.exp() * (log_p - log_q)).sum())
                count += reference.numel() / reference.shape[-1]
            else:
                total += float((out - reference).pow(2).sum())
                count += float(reference.double().pow(2).sum())
        return total / max(count, 1e-30)

    def quantized_alone(self, unit: Unit) -> float:
        with swapped(self.float_model, {name: self.kernels[name] for name in unit.linears}):
            return self.divergence(self.float_model)

    def float_alone(self, unit: Unit) -> float:
        with swapped(self.quant_model, {name: self.float_linears[name] for name in unit.linears}):
            return self.divergence(self.quant_model)

    def measure(self, units: list[Unit], end_to_end: bool = True) -> tuple[float, list[dict]]:
        """Q's whole divergence and one row per unit with every metric (end-to-end ones only if asked)."""
        if not self.reference:
            self.measure_reference()
        whole = self.divergence(self.quant_model) if end_to_end else float("nan")
        rows = []
        for order, unit in enumerate(units):
            row = {"order": order, "unit": unit.name, "pattern": unit.pattern, "linears": len(unit.linears),
                   "mse_layer_wise": sum(self.local[n] for n in unit.linears) / len(unit.linears)}
            for stat in ("kurtosis", "std", "quantile"):
                row[stat] = max(self.inputs[n][stat] for n in unit.linears)
            if end_to_end:
                row["mse_model_wise"] = self.quantized_alone(unit)
                row["float_gain"] = whole - self.float_alone(unit)
            rows.append(row)
        return whole, rows


def rank(rows: list[dict], metric: str) -> list[dict]:
    """Rows sorted most sensitive first (ties keep model order), each with its 1-based rank."""
    ordered = sorted(rows, key=lambda row: -row[metric])
    return [{"rank": i + 1, **row} for i, row in enumerate(ordered)]
