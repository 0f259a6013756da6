"""What one quantized linear becomes in the compressed-tensors format: its scheme entry and its tensors.

compressed-tensors (the format vLLM and vLLM-Ascend load through `quant_method: compressed-tensors`, and
transformers decompresses) stores, per linear module:

- int8 weights, `int-quantized`: `weight` (int8 codes), `weight_scale` ([out, 1] per channel or [out, in/g]
  per group), `weight_zero_point` (int8, same shape; asymmetric only). Values are (q − zero_point)·scale,
  which is our (codes − offset)·scale with offset = zero_point.
- int4 weights, `pack-quantized`: `weight_packed` (int32 [out, in·4/32]: each code + 8, eight per word, the
  first code in the lowest bits), `weight_shape` ([out, in]), `weight_scale`, and for asymmetric weights
  `weight_zero_point` packed the same way along the output dimension.
- fp8 weights, `float-quantized`: `weight` (float8_e4m3fn) and `weight_scale` ([out, 1]).
- static activations: `input_scale` ([1]) and, when asymmetric, `input_zero_point` (int8 [1]); dynamic
  activations (per token) store nothing.

Schemes it cannot express (pd_mix activations, int4 activations, MX block formats, per-head FA
quantization) are refused when the config is loaded (`CT_WRITES`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from modelslim_core.formats.tags import COMPRESSED_TENSORS, TAGS
from modelslim_core.quant.activations import DynamicFP8Act, DynamicIntAct, FloatAct, StaticIntAct
from modelslim_core.quant.quantized_linear import QuantizedLinear
from modelslim_core.quant.weight_formats import FP8Weight, IntWeight

#: Checkpoint tags (our schemes) compressed-tensors can express; the others are refused at config load.
CT_WRITES = TAGS.written_by(COMPRESSED_TENSORS)

INT_QUANTIZED = "int-quantized"
PACK_QUANTIZED = "pack-quantized"
FLOAT_QUANTIZED = "float-quantized"
MIXED_PRECISION = "mixed-precision"


@dataclass(frozen=True)
class CTScheme:
    """The part of a config group that does not depend on which modules it targets (hashable: groups key)."""

    format: str
    weights: tuple[tuple[str, Any], ...]
    input_activations: tuple[tuple[str, Any], ...] | None

    def to_json(self, targets: list[str]) -> dict[str, Any]:
        return {
            "targets": targets,
            "weights": dict(self.weights),
            "input_activations": dict(self.input_activations) if self.input_activations else None,
            "output_activations": None,
            "format": self.format,
        }


def pack_int_codes(codes: torch.Tensor, bits: int, dim: int = 1) -> torch.Tensor:
    """Codes in [-2^(b-1), 2^(b-1)) packed 32/b per int32 along `dim` (zero bits pad the last word)."""
    per_word = 32 // bits
    values = (codes.to(torch.int64) + (1 << (bits - 1)))
    if dim == 0:
        values = values.transpose(0, 1)
    rows, cols = values.shape
    padded = -(-cols // per_word) * per_word
    values = torch.nn.functional.pad(values, (0, padded - cols))  # padding bits are zero
    shifts = torch.arange(per_word, dtype=torch.int64) * bits
    words = (values.reshape(rows, padded // per_word, per_word) << shifts).sum(dim=-1)
    packed = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)  # two's complement view
    return packed.transpose(0, 1).contiguous() if dim == 0 else packed.contiguous()


def _int_weight_args(weight: IntWeight) -> tuple[dict[str, Any], bool]:
    symmetric = bool((weight.offset == 0).all())
    grouped = weight.group_size > 0
    args = {
        "num_bits": weight.bits,
        "type": "int",
        "symmetric": symmetric,
        "strategy": "group" if grouped else "channel",
        "group_size": weight.group_size if grouped else None,
        "dynamic": False,
        "observer": "minmax",
    }
    return args, symmetric


def _weight_part(layer: QuantizedLinear, scale_dtype: torch.dtype) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    weight = layer.qweight
    if isinstance(weight, FP8Weight):
        args = {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "channel", "group_size": None,
                "dynamic": False, "observer": "minmax"}
        return FLOAT_QUANTIZED, args, {"weight": weight.values, "weight_scale": weight.scale.to(scale_dtype)}
    if not isinstance(weight, IntWeight):
        raise TypeError(f"no compressed-tensors layout for weight container {type(weight).__name__}")
    args, symmetric = _int_weight_args(weight)
    scale = weight.scale.to(scale_dtype).contiguous()
    zero_point = weight.offset.round().to(torch.int8)
    if weight.bits == 8:
        tensors = {"weight": weight.codes.contiguous(), "weight_scale": scale}
        if not symmetric:
            tensors["weight_zero_point"] = zero_point.contiguous()
        return INT_QUANTIZED, args, tensors
    tensors = {
        "weight_packed": pack_int_codes(weight.codes, weight.bits),
        "weight_shape": torch.tensor(list(weight.shape), dtype=torch.int64),
        "weight_scale": scale,
    }
    if not symmetric:
        tensors["weight_zero_point"] = pack_int_codes(zero_point, weight.bits, dim=0)
    return PACK_QUANTIZED, args, tensors


def _act_part(act: torch.nn.Module, scale_dtype: torch.dtype) -> tuple[dict[str, Any] | None, dict[str, torch.Tensor]]:
    if isinstance(act, FloatAct):
        return None, {}
    if isinstance(act, StaticIntAct) and type(act) is StaticIntAct:  # not PdMixAct: no CT equivalent
        symmetric = bool((act.offset == 0).all())
        args = {"num_bits": act.bits, "type": "int", "symmetric": symmetric, "strategy": "tensor",
                "group_size": None, "dynamic": False, "observer": "minmax"}
        tensors = {"input_scale": act.scale.to(scale_dtype).reshape(1)}
        if not symmetric:
            tensors["input_zero_point"] = act.offset.round().to(torch.int8).reshape(1)
        return args, tensors
    if isinstance(act, DynamicIntAct) and act.bits == 8:
        return {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "group_size": None,
                "dynamic": True, "observer": None}, {}
    if isinstance(act, DynamicFP8Act):
        return {"num_bits": 8, "type": "float", "symmetric": True, "strategy": "token", "group_size": None,
                "dynamic": True, "observer": None}, {}
    raise TypeError(f"no compressed-tensors layout for activation module {type(act).__name__}")


def ct_linear(layer: QuantizedLinear, scale_dtype: torch.dtype) -> tuple[CTScheme, dict[str, torch.Tensor]]:
    """The scheme (for config_groups) and the tensors (suffix -> tensor) of one quantized linear."""
    fmt, weight_args, tensors = _weight_part(layer, scale_dtype)
    act_args, act_tensors = _act_part(layer.act, scale_dtype)
    tensors.update(act_tensors)
    frozen_act = tuple(sorted(act_args.items())) if act_args else None
    return CTScheme(fmt, tuple(sorted(weight_args.items())), frozen_act), tensors
