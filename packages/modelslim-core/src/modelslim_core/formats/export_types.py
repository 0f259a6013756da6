"""Which checkpoint tag a linear_quant qconfig exports: (activation scheme, weight scheme) -> tag.

It lives with the tag registry (formats/tags.py) so that adding an export tag touches this folder only: the
registration, its exporter (exporters.py), its reference kernel (kernels/) and, when a new qconfig combination
produces it, one line here. tests/engines/test_tag_registry.py checks every tag named here is registered.
"""

from __future__ import annotations

from modelslim_core.quant.schemes import Scheme

_FLOAT_ACT = Scheme("float", "per_tensor", True)
_INT8_TOKEN = Scheme("int8", "per_token", True)
_INT4_TOKEN = Scheme("int4", "per_token", True)
_INT8_PC_SYM = Scheme("int8", "per_channel", True)


def _int_weights(dtype: str, scopes: tuple[str, ...]) -> list[Scheme]:
    return [Scheme(dtype, scope, symmetric) for scope in scopes for symmetric in (True, False)]


#: (act scheme, weight scheme) -> the ascendv1 tag of the exported linear.
EXPORT_TYPES: dict[tuple[Scheme, Scheme], str] = {
    (Scheme("int8", "per_tensor", False), _INT8_PC_SYM): "W8A8",
    (Scheme("int8", "per_tensor", True), _INT8_PC_SYM): "W8A8",
    (Scheme("int8", "pd_mix", False), _INT8_PC_SYM): "W8A8_MIX",
    (_INT8_TOKEN, _INT8_PC_SYM): "W8A8_DYNAMIC",
    **{(_INT8_TOKEN, weight): "W8A8_DYNAMIC" for weight in _int_weights("int8", ("per_group",))},
    **{(_FLOAT_ACT, weight): "W8A16" for weight in _int_weights("int8", ("per_channel", "per_group"))},
    (_INT8_TOKEN, Scheme("int4", "per_channel", True)): "W4A8_DYNAMIC",
    # Not in the reference tool: int4 weights per group under int8 tokens, and int4 weight-only. vLLM-Ascend
    # loads neither from an ascendv1 checkpoint (its W4A8 rejects group_size > 0; its W4A16 is MoE-only and
    # reads LLM-Compressor tensors), so only compressed_tensors_saver writes them.
    (_INT8_TOKEN, Scheme("int4", "per_group", True)): "W4A8_DYNAMIC_PER_GROUP",
    **{(_FLOAT_ACT, weight): "W4A16" for weight in _int_weights("int4", ("per_channel", "per_group"))},
    **{(_INT4_TOKEN, weight): "W4A4_DYNAMIC" for weight in _int_weights("int4", ("per_channel", "per_group"))},
    (Scheme("fp8_e4m3", "per_token", True), Scheme("fp8_e4m3", "per_channel", True)): "W8A8FP8_DYNAMIC",
    (Scheme("mxfp8", "per_block", True), Scheme("mxfp8", "per_block", True)): "W8A8_MXFP8",
    (Scheme("mxfp8", "per_block", True), Scheme("mxfp4", "per_block", True)): "W4A8_MXFP",
    (Scheme("mxfp4", "per_block", True), Scheme("mxfp4", "per_block", True)): "W4A4_MXFP4",
    (Scheme("mxfp4", "dual_scale", True), Scheme("mxfp4", "dual_scale", True)): "W4A4_MXFP4_DUALSCALE",
}


def supported_pairs() -> str:
    """Human-readable list of exportable pairs, for error messages."""
    return ", ".join(f"act {a} + weight {w} -> {tag}" for (a, w), tag in EXPORT_TYPES.items())
