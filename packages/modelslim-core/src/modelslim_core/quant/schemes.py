"""Which quantization schemes exist, which methods implement them, and what each (act, weight) pair exports.

A scheme is (dtype, scope, symmetric). The tables here are the single source of truth for config
validation: a YAML that asks for a pair we cannot export is refused when it is loaded, not after an hour
of calibration. New methods and export types are added by extending these tables.
"""

from __future__ import annotations

from dataclasses import dataclass

DTYPES = ("float", "int8", "int4", "mxfp8", "mxfp4", "fp8_e4m3")
SCOPES = ("per_tensor", "per_channel", "per_group", "per_block", "per_token", "pd_mix", "per_head", "dual_scale")


@dataclass(frozen=True)
class Scheme:
    dtype: str
    scope: str
    symmetric: bool

    def __str__(self) -> str:
        return f"{self.dtype}/{self.scope}/{'sym' if self.symmetric else 'asym'}"


#: Activation schemes -> {method: allowed ext keys}.
ACT_METHODS: dict[Scheme, dict[str, frozenset[str]]] = {
    Scheme("float", "per_tensor", True): {"none": frozenset()},
    Scheme("int8", "per_tensor", True): {"minmax": frozenset({"aggregation_type"})},
    Scheme("int8", "per_tensor", False): {"minmax": frozenset({"aggregation_type"})},
    Scheme("int8", "per_token", True): {"minmax": frozenset()},
}

#: Weight schemes -> {method: allowed ext keys}.
WEIGHT_METHODS: dict[Scheme, dict[str, frozenset[str]]] = {
    Scheme("int8", "per_channel", True): {"minmax": frozenset()},
    Scheme("int8", "per_channel", False): {"minmax": frozenset()},
}

#: (act scheme, weight scheme) -> the ascendv1 tag of the exported linear.
EXPORT_TYPES: dict[tuple[Scheme, Scheme], str] = {
    (Scheme("int8", "per_tensor", False), Scheme("int8", "per_channel", True)): "W8A8",
    (Scheme("int8", "per_tensor", True), Scheme("int8", "per_channel", True)): "W8A8",
    (Scheme("int8", "per_token", True), Scheme("int8", "per_channel", True)): "W8A8_DYNAMIC",
    (Scheme("float", "per_tensor", True), Scheme("int8", "per_channel", True)): "W8A16",
    (Scheme("float", "per_tensor", True), Scheme("int8", "per_channel", False)): "W8A16",
}

#: Activation scopes whose parameters are fixed at calibration (they need calibration data).
STATIC_ACT_SCOPES = frozenset({"per_tensor", "pd_mix", "per_head"})

BITS = {"int8": 8, "int4": 4}


def supported_pairs() -> str:
    """Human-readable list of exportable pairs, for error messages."""
    return ", ".join(f"act {a} + weight {w} -> {tag}" for (a, w), tag in EXPORT_TYPES.items())


def describe_methods(table: dict[Scheme, dict[str, frozenset[str]]]) -> str:
    return ", ".join(f"{scheme} ({'|'.join(sorted(methods))})" for scheme, methods in table.items())
