"""The tensors each quantized linear contributes to an ascendv1 checkpoint (docs/formats.md).

One function per export tag, registered with its tag in formats/tags.py; each returns `(suffix, tensor, tag)`
triples in the order they are written.
Names, dtypes and shapes here are the wire format vLLM-Ascend loads, so they never change silently.
Every function takes the linear's full name (W4A8_DYNAMIC's scale_bias layout depends on the module's
role), the quantized layer and the model's own dtype.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from modelslim_core.quant.packing import fp4_codes, pack_fp4, pack_int4_rows
from modelslim_core.quant.quantized_linear import QuantizedLinear
from modelslim_core.quant.row_blocks import row_code_sums
from modelslim_core.quant.scale_bias import scale_bias, scale_bias_chunks


@dataclass(frozen=True)
class ExportDtypes:
    """The dtypes a format writes: float tensors in the source model's dtype (None: as they are), and
    `deq_scale` either as float32 or as the float32 bit pattern widened to int64 (what fp16 kernels read)."""

    source: torch.dtype | None
    deq_scale_float32: bool


Exported = list[tuple[str, torch.Tensor, str]]
Exporter = Callable[[str, QuantizedLinear, ExportDtypes], Exported]


def deq_scale_tensor(deq_scale: torch.Tensor, dtypes: ExportDtypes) -> torch.Tensor:
    """float32 for bf16 models; otherwise the float32 bit pattern widened to int64, as the kernels expect."""
    deq_scale = deq_scale.float().contiguous()
    if dtypes.deq_scale_float32:
        return deq_scale
    return deq_scale.view(torch.int32).to(torch.int64)


def quant_bias_tensor(layer: QuantizedLinear, deq_scale: torch.Tensor) -> torch.Tensor:
    """round(bias / deq_scale − input_offset · Σ_k W_q[n, k]) as int32: folds bias and zero point into the int32 sum."""
    bias = layer.bias.float() if layer.bias is not None else torch.zeros(layer.out_features)
    row_sums = row_code_sums(layer.qweight.codes)[:, 0].double()  # exact integer sums, a block of rows at a time
    folded = bias.double() / deq_scale.double() - layer.act.offset.double() * row_sums
    return torch.round(folded).to(torch.int32)


def _tagged(tag: str, tensors: dict[str, torch.Tensor]) -> Exported:
    return [(suffix, tensor, tag) for suffix, tensor in tensors.items()]


def _float_bias(layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
    """The optional float bias of weight-quantized linears, in the model's dtype, tagged FLOAT."""
    if layer.bias is None:
        return []
    return [("bias", layer.bias.to(dtypes.source or layer.bias.dtype), "FLOAT")]


def _scale_and_zero_offset(scale: torch.Tensor) -> dict[str, torch.Tensor]:
    """weight_scale `[out, 1]` fp32 and the all-zero weight_offset the symmetric kernels still expect."""
    scale = scale.float().reshape(-1, 1)
    return {"weight_scale": scale, "weight_offset": torch.zeros_like(scale)}


def _static_int8(layer: QuantizedLinear, dtypes: ExportDtypes) -> dict[str, torch.Tensor]:
    """The W8A8 static set: y = deq_scale · (x_q · W_qᵀ + quant_bias); the float bias is also kept."""
    deq_scale = layer.act.scale.float() * layer.qweight.scale.float().reshape(-1)
    bias = layer.bias.float() if layer.bias is not None else torch.zeros(layer.out_features)
    return {
        "weight": layer.qweight.codes.to(torch.int8),
        "quant_bias": quant_bias_tensor(layer, deq_scale),
        "input_scale": layer.act.scale.float().reshape(1),
        "input_offset": layer.act.offset.float().reshape(1),
        "deq_scale": deq_scale_tensor(deq_scale, dtypes),
        "bias": bias,
    }


def _split_bias(tag: str, tensors: dict[str, torch.Tensor]) -> Exported:
    """Tag everything with `tag` except the float `bias`, which is FLOAT."""
    bias = tensors.pop("bias")
    return _tagged(tag, tensors) + [("bias", bias, "FLOAT")]


def export_w8a8(name: str, layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
    return _split_bias("W8A8", _static_int8(layer, dtypes))


def export_w8a8_mix(name: str, layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
    """W8A8 (decode, static) plus the per-channel weight scale the dynamic prefill path needs."""
    tensors = {**_static_int8(layer, dtypes), **_scale_and_zero_offset(layer.qweight.scale)}
    return _split_bias("W8A8_MIX", tensors)


def export_w8a8s(name: str, layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
    """Sparse W8A8: the W8A8 tensor set (pruned weights are code 0), tagged W8A8S."""
    return _split_bias("W8A8S", _static_int8(layer, dtypes))


def export_w16a16s(name: str, layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
    """Pruned, mantissa-compressed FP16 weight and the FP16 bias, both tagged W16A16S (no scale tensor)."""
    tensors = {"weight": layer.qweight.values.to(torch.float16)}
    if layer.bias is not None:
        tensors["bias"] = layer.bias.to(torch.float16)
    return _tagged("W16A16S", tensors)


def _int_weight_exporter(tag: str) -> Exporter:
    """Unpacked int8 codes with scale/offset `[out, 1]` (per channel) or `[out, in/group_size]` (per group)."""

    def export(name: str, layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
        weight = layer.qweight
        tensors = {
            "weight": weight.codes.to(torch.int8),
            "weight_scale": weight.scale.float(),
            "weight_offset": weight.offset.float(),
        }
        return _tagged(tag, tensors) + _float_bias(layer, dtypes)

    export.__name__ = f"export_{tag.lower()}"
    return export


def export_w4a8_dynamic(name: str, layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
    """int4 codes packed in pairs of output rows, per-channel scale, and the role-dependent scale_bias."""
    weight = layer.qweight
    tensors = {
        "weight": pack_int4_rows(weight.codes),
        **_scale_and_zero_offset(weight.scale),
        "scale_bias": scale_bias(weight.codes, weight.scale, scale_bias_chunks(name)),
    }
    return _tagged("W4A8_DYNAMIC", tensors) + _float_bias(layer, dtypes)


def export_w8a8fp8_dynamic(name: str, layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
    tensors = {"weight": layer.qweight.values, **_scale_and_zero_offset(layer.qweight.scale)}
    return _tagged("W8A8FP8_DYNAMIC", tensors) + _float_bias(layer, dtypes)


def export_w8a8_mxfp8(name: str, layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
    """E4M3 elements (unscaled) and uint8 E8M0 exponents `[out, ceil(in/32)]`."""
    tensors = {"weight": layer.qweight.elements, "weight_scale": layer.qweight.exponents}
    return _tagged("W8A8_MXFP8", tensors) + _float_bias(layer, dtypes)


def _mxfp4_weight_exporter(tag: str) -> Exporter:
    """FP4 E2M1 codes packed in pairs along the input dim (uint8 `[out, in/2]`) and uint8 E8M0 exponents."""

    def export(name: str, layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
        weight = layer.qweight
        tensors = {"weight": pack_fp4(fp4_codes(weight.elements.float())), "weight_scale": weight.exponents}
        return _tagged(tag, tensors) + _float_bias(layer, dtypes)

    export.__name__ = f"export_{tag.lower()}"
    return export


def export_w4a4_mxfp4_dualscale(name: str, layer: QuantizedLinear, dtypes: ExportDtypes) -> Exported:
    """Packed FP4 codes and E8M0 exponents of W / S, and the float32 outer scale S `[out, in/dual, 1]`."""
    weight = layer.qweight
    tensors = {"weight": pack_fp4(fp4_codes(weight.elements.float())), "weight_scale": weight.exponents,
               "weight_dual_scale": weight.dual_scale.float().unsqueeze(-1).contiguous()}
    return _tagged("W4A4_MXFP4_DUALSCALE", tensors) + _float_bias(layer, dtypes)


export_w8a8_dynamic = _int_weight_exporter("W8A8_DYNAMIC")
export_w8a16 = _int_weight_exporter("W8A16")
export_w4a4_dynamic = _int_weight_exporter("W4A4_DYNAMIC")
export_w4a8_mxfp = _mxfp4_weight_exporter("W4A8_MXFP")
export_w4a4_mxfp4 = _mxfp4_weight_exporter("W4A4_MXFP4")
