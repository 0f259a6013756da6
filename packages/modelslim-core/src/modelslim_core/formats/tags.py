"""Every checkpoint tag the project writes, registered once (formats/registry.py says what an entry holds).

The engine columns were established by running each engine's own loader on our output (tests/engines):
vLLM-Ascend 0.23.0's `AscendModelSlimConfig` scheme registry and the parameters each scheme allocates (also its
310P config), and MindIE-SD 3.1.0's `quantize()`. Adding a tag: write its exporter (formats/exporters.py) and
reference kernel (reference_runtime/kernels/), then register it here; tests/engines/test_tag_registry.py checks
that every consumer picks it up.
"""

from __future__ import annotations

from modelslim_core.formats.registry import (LOADS, MINDIE_SD, VLLM_ASCEND, VLLM_ASCEND_310P, Support, TagFormat,
                                             TagRegistry)

ASCENDV1 = "ascendv1_saver"
MINDIE = "mindie_format_saver"
COMPRESSED_TENSORS = "compressed_tensors_saver"
#: The QuaRot extras tags (also named in rotation/export.py, which records the rotations).
QUAROT = "QUAROT"
QUAROT_ONLINE = "QUAROT_ONLINE"

_EXPORTERS = "modelslim_core.formats.exporters"
_KERNELS = "modelslim_core.reference_runtime.kernels"
_SYMMETRIC_ONLY = Support(asymmetric_weights=False)
_MX = Support(per_group=True)  # MX block exponents are per group of 32 input columns by design

TAGS = TagRegistry()


def _linear(tag: str, summary: str, weight_bits: int, act_bits: int, kernel: str, savers: tuple[str, ...],
            engines: dict, rank: int | None = None, **extra) -> TagFormat:
    """A quantized-linear tag with its ascendv1 exporter `export_<tag>` and kernel `<module>:<Class>`."""
    return TAGS.register(TagFormat(
        tag, "linear", summary, weight_bits=weight_bits, act_bits=act_bits, rank=rank,
        exporter=f"{_EXPORTERS}:export_{tag.lower()}", kernel=f"{_KERNELS}.{kernel}", savers=frozenset(savers),
        engines=engines, **extra))


TAGS.register(TagFormat("FLOAT", "float", "kept in the model's float dtype", rank=0,
                        savers=frozenset({ASCENDV1, MINDIE, COMPRESSED_TENSORS}),
                        engines={VLLM_ASCEND: LOADS, VLLM_ASCEND_310P: LOADS, MINDIE_SD: LOADS}))
_linear("W16A16S", "pruned float16 weights for sparse compression", 16, 16, "w16a16s:W16A16SKernel", (ASCENDV1,), {},
        rank=1, alternative="serve it with MindIE (--tag MindIE), or use --quant_type w8a8 for vLLM-Ascend")
_linear("W8A16", "int8 weights, float activations", 8, 16, "w8a16:W8A16Kernel", (ASCENDV1, COMPRESSED_TENSORS),
        {VLLM_ASCEND: LOADS}, rank=2)
_linear("W8A8_DYNAMIC", "int8 weights, int8 per-token dynamic activations", 8, 8,
        "w8a8_dynamic:W8A8DynamicKernel", (ASCENDV1, MINDIE, COMPRESSED_TENSORS),
        {VLLM_ASCEND: _SYMMETRIC_ONLY, MINDIE_SD: _SYMMETRIC_ONLY}, rank=3)
_linear("W8A8_MIX", "W8A8 static for decode plus per-channel scales for dynamic prefill", 8, 8,
        "w8a8_mix:W8A8MixKernel", (ASCENDV1,), {VLLM_ASCEND: LOADS}, rank=4, deq_scale=True)
_linear("W8A8", "int8 weights, int8 static per-tensor activations", 8, 8, "w8a8:W8A8Kernel",
        (ASCENDV1, MINDIE, COMPRESSED_TENSORS), {VLLM_ASCEND: LOADS, VLLM_ASCEND_310P: LOADS, MINDIE_SD: LOADS},
        rank=5, deq_scale=True)
_linear("W8A8S", "W8A8 on pruned weights for sparse compression", 8, 8, "w8a8s:W8A8SKernel", (ASCENDV1,),
        {VLLM_ASCEND_310P: LOADS}, rank=6, deq_scale=True,
        alternative="target an Atlas 300I (--tag 310P; served in float16), or use W8A8 (--quant_type w8a8)")
_linear("W8A8FP8_DYNAMIC", "FP8 E4M3 weights, FP8 per-token dynamic activations", 8, 8,
        "w8a8fp8_dynamic:W8A8FP8DynamicKernel", (ASCENDV1, COMPRESSED_TENSORS), {VLLM_ASCEND: LOADS}, rank=7,
        aliases=("WFP8AFP8_DYNAMIC",))
_linear("W8A8_MXFP8", "MXFP8 weights and activations", 8, 8, "w8a8_mxfp8:W8A8MXFP8Kernel", (ASCENDV1, MINDIE),
        {VLLM_ASCEND: _MX, MINDIE_SD: _MX}, rank=8)
_linear("W4A8_MXFP", "MXFP4 weights, MXFP8 activations", 4, 8, "w4a8_mxfp:W4A8MXFPKernel", (ASCENDV1,),
        {VLLM_ASCEND: _MX}, rank=9, packing="columns")
_linear("W4A4_DYNAMIC", "int4 weights, int4 per-token dynamic activations", 4, 4, "w4a4_dynamic:W4A4DynamicKernel",
        (ASCENDV1,), {VLLM_ASCEND: _SYMMETRIC_ONLY}, rank=10)
_linear("W4A4_MXFP4", "MXFP4 weights and activations", 4, 4, "w4a4_mxfp4:W4A4MXFP4Kernel", (ASCENDV1, MINDIE),
        {VLLM_ASCEND: _MX, MINDIE_SD: _MX}, rank=11, packing="columns")
_linear("W4A4_MXFP4_DUALSCALE", "MXFP4 with a float32 outer scale per block of columns", 4, 4,
        "w4a4_mxfp4_dualscale:W4A4MXFP4DualScaleKernel", (ASCENDV1, MINDIE), {MINDIE_SD: _MX}, rank=12,
        packing="columns")
_linear("W4A8_DYNAMIC", "int4 weights (two output rows per byte), int8 per-token dynamic activations", 4, 8,
        "w4a8_dynamic:W4A8DynamicKernel", (ASCENDV1, COMPRESSED_TENSORS),
        {VLLM_ASCEND: Support(asymmetric_weights=False, experts_only=True)}, packing="rows",
        alternative="use W4A8_DYNAMIC on MoE experts only (include: ['*mlp.experts.*']) and W8A8_DYNAMIC elsewhere, "
                    "or compressed_tensors_saver for int4 dense linears")
# compressed-tensors only: vLLM-Ascend loads neither from an ascendv1 checkpoint.
TAGS.register(TagFormat("W4A16", "linear", "int4 weights, float activations (compressed-tensors)", weight_bits=4,
                        act_bits=16, savers=frozenset({COMPRESSED_TENSORS}),
                        alternative="save with compressed_tensors_saver"))
TAGS.register(TagFormat("W4A8_DYNAMIC_PER_GROUP", "linear", "int4 per-group weights, int8 per-token activations "
                        "(compressed-tensors)", weight_bits=4, act_bits=8, savers=frozenset({COMPRESSED_TENSORS}),
                        alternative="save with compressed_tensors_saver"))
TAGS.register(TagFormat("C8", "attention", "int8 KV cache (per-channel K/V scales and offsets)", savers=frozenset({ASCENDV1}),
                        engines={VLLM_ASCEND: LOADS}))
TAGS.register(TagFormat("FAQuant", "attention", "int8 FlashAttention Q/K/V scales", savers=frozenset({ASCENDV1}),
                        engines={VLLM_ASCEND: Support(mla_only=True)},
                        alternative="drop fa3_quant for this model (vLLM-Ascend reads FA scales only on MLA attention), "
                                    "or use dynamic_cache (C8)"))
TAGS.register(TagFormat(QUAROT, "extras", "QuaRot's global rotation in optional/quarot.safetensors (folded into the "
                        "weights; read only by Eagle3 drafting)", savers=frozenset({ASCENDV1}),
                        engines={VLLM_ASCEND: LOADS, VLLM_ASCEND_310P: LOADS}))
TAGS.register(TagFormat(QUAROT_ONLINE, "extras", "QuaRot's online rotations (heads_rotation, kronecker_rotation_m/_n "
                        "beside o_proj / down_proj), applied to activations at serving time", savers=frozenset({ASCENDV1}),
                        unloaded="(online: true) writes rotation matrices no vLLM-Ascend scheme reads (heads_rotation, "
                                 "kronecker_rotation_m/_n), so the served model would skip rotations its weights assume",
                        alternative="set online: false (the rotation is then folded into the weights, which vLLM-Ascend "
                                    "serves)"))
