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


def _number_in(value: Any, low: float, high: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high


def _positive_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class ExtKey:
    """One `ext` key: what a valid value looks like (for messages) and the check itself."""

    rule: str
    valid: Callable[[Any], bool]


#: `ext.group_size: auto`: the group size is the largest of AUTO_GROUP_SIZES dividing every quantized input dim.
AUTO_GROUP_SIZE = "auto"
AUTO_GROUP_SIZES = (128, 64, 32)


def adaptive_group_size(input_dims: set[int] | list[int]) -> int | None:
    """The largest of AUTO_GROUP_SIZES that divides every input dimension (None if none does). Real models
    are not all multiples of 128 (SmolLM2-135M's hidden size is 576): the same practice then still fits."""
    return next((size for size in AUTO_GROUP_SIZES if all(dim % size == 0 for dim in input_dims)), None)


#: Every `ext` key some method reads, with its allowed values.
EXT_KEYS: dict[str, ExtKey] = {
    "aggregation_type": ExtKey("'max' or 'mean'", lambda v: v in ("max", "mean")),
    "step": ExtKey("an integer >= 1 (SSZ iterations)", _positive_int),
    "percdamp": ExtKey("a number > 0 (damping, as a fraction of the mean Hessian diagonal)", _positive_number),
    "block_size": ExtKey("an integer > 0 (columns per GPTQ block)", _positive_int),
    "group_size": ExtKey(
        "an integer > 0 (input columns per group) or 'auto' (the largest of 128/64/32 that divides the input "
        "dimension of every layer the linear_quant quantizes)", lambda v: _positive_int(v) or v == AUTO_GROUP_SIZE),
    "act_order": ExtKey("true or false (GPTQ: quantize columns by decreasing Hessian diagonal)", lambda v: isinstance(v, bool)),
    "clip_search": ExtKey("true or false (GPTQ: each row's grid range shrunk to the least input-weighted error; "
                          "default true at int4, false at int8)",
                          lambda v: isinstance(v, bool)),
    "full_range": ExtKey("true or false (GPTQ, symmetric: the grid spans every code, scale max|x|/7.5 at int4 "
                         "instead of /7; default true at int4, false at int8)", lambda v: isinstance(v, bool)),
    "axes": ExtKey("-1 (MX blocks run along the input dimension)", lambda v: v == -1 and not isinstance(v, bool)),
    "ceil_x_value": ExtKey("a number in [6, 12] (ceil_x: largest scaled block maximum)", lambda v: _number_in(v, 6, 12)),
    "enable_search": ExtKey("true or false (ceil_x: search c per layer)", lambda v: isinstance(v, bool)),
    "search_min": ExtKey("a number in [6, 12] (ceil_x search start)", lambda v: _number_in(v, 6, 12)),
    "search_max": ExtKey("a number in [6, 12] (ceil_x search end)", lambda v: _number_in(v, 6, 12)),
    "search_step": ExtKey("a number > 0 (ceil_x search step)", _positive_number),
    "dual_block_size": ExtKey("a positive multiple of 32 (columns per outer dual-scale block)",
                              lambda v: _positive_int(v) and v % 32 == 0),
}

#: `ext` keys that reference-tool configs carry for methods or scopes that do not read them (its quantizers
#: ignore unread keys): accepted here with a warning saying where the key does have an effect. Any other
#: unread key is an error.
REFERENCE_EXT_USES: dict[str, str] = {
    "aggregation_type": "by minmax activations with scope per_tensor or pd_mix",
    "axes": "by the MX methods (dtype mxfp8/mxfp4, scope per_block)",
    "step": "by the ssz weight method (int, scope per_channel, symmetric)",
    "percdamp": "by the gptq weight method",
    "block_size": "by the gptq weight method",
    "act_order": "by the gptq weight method",
    "group_size": "with scope per_group (scope per_channel quantizes whole rows)",
    "scale_dtype": "by autoround_quant (the dtype of its learned scales); other methods keep scales in float32",
    "enable_search": "by the ceil_x MX weight method",
    "dual_block_size": "by the dualscale MX weight method (scope dual_scale)",
}

def _ceil_x_search(ext: dict[str, Any]) -> str | None:
    if ext.get("enable_search") and ext.get("search_max", 12.0) <= ext.get("search_min", 6.0):
        return "ext.search_max must be greater than ext.search_min when enable_search is true"
    return None


#: Checks across several `ext` keys of one method: None, or what is wrong.
EXT_RULES: dict[str, Callable[[dict[str, Any]], str | None]] = {"ceil_x": _ceil_x_search}

#: `ext` keys a scope needs whatever the method: a per-group scheme is meaningless without its group size.
REQUIRED_EXT_BY_SCOPE: dict[str, frozenset[str]] = {"per_group": frozenset({"group_size"}),
                                                    "dual_scale": frozenset({"dual_block_size"})}

_NONE: frozenset[str] = frozenset()
_AGGREGATION = frozenset({"aggregation_type"})
_GROUP = frozenset({"group_size"})
_SSZ = frozenset({"step"})
_GPTQ = frozenset({"percdamp", "block_size", "act_order", "clip_search", "full_range"})
_MX = frozenset({"axes"})
_CEIL_X = _MX | {"ceil_x_value", "enable_search", "search_min", "search_max", "search_step"}
_DUAL = _MX | {"dual_block_size"}


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
    Scheme("mxfp4", "dual_scale", True): {"minmax": _DUAL, "dualscale": _DUAL},
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
    Scheme("mxfp8", "per_block", True): {"minmax": _MX, "mse_round": _MX},
    Scheme("mxfp4", "per_block", True): {"minmax": _MX, "ceil_x": _CEIL_X, "fouroversix": _MX},
    Scheme("mxfp4", "dual_scale", True): {"dualscale": _DUAL},
}

#: Activation scopes whose parameters are fixed at calibration (they need calibration data).
STATIC_ACT_SCOPES = frozenset({"per_tensor", "pd_mix", "per_head"})

#: Bits of the integer dtypes.
BITS = {"int8": 8, "int4": 4}

#: Elements per MX block (one shared E8M0 exponent each), along the input dimension.
MX_BLOCK = 32


def describe_methods(table: dict[Scheme, dict[str, frozenset[str]]]) -> str:
    return ", ".join(f"{scheme} ({'|'.join(sorted(methods))})" for scheme, methods in table.items())
