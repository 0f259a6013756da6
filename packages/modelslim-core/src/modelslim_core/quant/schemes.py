"""Which quantization schemes exist, which methods implement them, and what each (act, weight) pair exports.

A scheme is (dtype, scope, symmetric). The tables here are the single source of truth for config
validation: a YAML that asks for a pair we cannot export, a method a scheme does not have, or an `ext` key
its method does not read is refused when it is loaded, not after an hour of calibration. New methods and
export types are added by extending these tables (and `quant/methods.py`, which maps a method name to its
implementation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DTYPES = ("float", "int8", "int4", "mxfp8", "mxfp4", "fp8_e4m3")
SCOPES = ("per_tensor", "per_channel", "per_group", "per_block", "per_token", "pd_mix", "per_head", "dual_scale")


@dataclass(frozen=True)
class Scheme:
    dtype: str
    scope: str
    symmetric: bool

    def __str__(self) -> str:
        return f"{self.dtype}/{self.scope}/{'sym' if self.symmetric else 'asym'}"


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class ExtKey:
    """One `ext` key: what a valid value looks like (for messages) and the check itself."""

    rule: str
    valid: Callable[[Any], bool]


#: Every `ext` key some method reads, with its allowed values.
EXT_KEYS: dict[str, ExtKey] = {
    "aggregation_type": ExtKey("'max' or 'mean'", lambda v: v in ("max", "mean")),
    "step": ExtKey("an integer >= 1 (SSZ iterations)", _positive_int),
    "percdamp": ExtKey("a number > 0 (damping, as a fraction of the mean Hessian diagonal)", _positive_number),
    "block_size": ExtKey("an integer > 0 (columns per GPTQ block)", _positive_int),
    "group_size": ExtKey("an integer > 0 (input columns per group)", _positive_int),
    "act_order": ExtKey("true or false (GPTQ: quantize columns by decreasing Hessian diagonal)", lambda v: isinstance(v, bool)),
    "axes": ExtKey("-1 (MX blocks run along the input dimension)", lambda v: v == -1 and not isinstance(v, bool)),
}

#: `ext` keys a scope needs whatever the method: a per-group scheme is meaningless without its group size.
REQUIRED_EXT_BY_SCOPE: dict[str, frozenset[str]] = {"per_group": frozenset({"group_size"})}

_NONE: frozenset[str] = frozenset()
_AGGREGATION = frozenset({"aggregation_type"})
_GROUP = frozenset({"group_size"})
_SSZ = frozenset({"step"})
_GPTQ = frozenset({"percdamp", "block_size", "act_order"})
_MX = frozenset({"axes"})


def _int_weight_methods(scope: str, symmetric: bool) -> dict[str, frozenset[str]]:
    """minmax everywhere; ssz only per-channel symmetric; gptq per-channel and per-group, sym and asym."""
    group_keys = _GROUP if scope == "per_group" else _NONE
    methods = {"minmax": group_keys, "gptq": _GPTQ | group_keys}
    if scope == "per_channel" and symmetric:
        methods["ssz"] = _SSZ
    return methods


#: Activation schemes -> {method: allowed ext keys}.
ACT_METHODS: dict[Scheme, dict[str, frozenset[str]]] = {
    Scheme("float", "per_tensor", True): {"none": _NONE},
    Scheme("int8", "per_tensor", True): {"minmax": _AGGREGATION, "histogram": _NONE},
    Scheme("int8", "per_tensor", False): {"minmax": _AGGREGATION, "histogram": _NONE},
    Scheme("int8", "per_token", True): {"minmax": _NONE},
    Scheme("int4", "per_token", True): {"minmax": _NONE},
    Scheme("fp8_e4m3", "per_token", True): {"minmax": _NONE},
    Scheme("int8", "pd_mix", False): {"minmax": _AGGREGATION},
    Scheme("mxfp8", "per_block", True): {"minmax": _MX},
    Scheme("mxfp4", "per_block", True): {"minmax": _MX},
}

#: Weight schemes -> {method: allowed ext keys}.
WEIGHT_METHODS: dict[Scheme, dict[str, frozenset[str]]] = {
    **{
        Scheme(dtype, scope, symmetric): _int_weight_methods(scope, symmetric)
        for dtype in ("int8", "int4")
        for scope in ("per_channel", "per_group")
        for symmetric in (True, False)
    },
    Scheme("fp8_e4m3", "per_channel", True): {"minmax": _NONE},
    Scheme("mxfp8", "per_block", True): {"minmax": _MX},
    Scheme("mxfp4", "per_block", True): {"minmax": _MX},
}

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
}

#: Activation scopes whose parameters are fixed at calibration (they need calibration data).
STATIC_ACT_SCOPES = frozenset({"per_tensor", "pd_mix", "per_head"})

#: Bits of the integer dtypes.
BITS = {"int8": 8, "int4": 4}

#: Elements per MX block (one shared E8M0 exponent each), along the input dimension.
MX_BLOCK = 32


def supported_pairs() -> str:
    """Human-readable list of exportable pairs, for error messages."""
    return ", ".join(f"act {a} + weight {w} -> {tag}" for (a, w), tag in EXPORT_TYPES.items())


def describe_methods(table: dict[Scheme, dict[str, frozenset[str]]]) -> str:
    return ", ".join(f"{scheme} ({'|'.join(sorted(methods))})" for scheme, methods in table.items())
