"""The formats a conversion moves a linear between, and the routes from one to another.

A source tensor is stored FLOAT, FP8_BLOCK (`weight` + `weight_scale_inv`) or INT4_PACKED (compressed-tensors
`weight_packed` + `weight_scale` [+ `weight_shape`]). Quantized sources only ever go to FLOAT (dequantized);
FLOAT goes to a data-free target tag, whose weights need no calibration data and whose activations are
quantized at run time by the engine. Every quantized target goes through FLOAT.
"""

from __future__ import annotations

from modelslim_core.protocol.qconfig import LinearQConfig, QConfig

FLOAT = "FLOAT"
FP8_BLOCK = "FP8_BLOCK"
INT4_PACKED = "INT4_PACKED"
SOURCE_KINDS = (FLOAT, FP8_BLOCK, INT4_PACKED)

#: What `SourceWeights.stored_format` reports -> the source kind.
KIND_OF_STORED = {"plain": FLOAT, "fp8_block": FP8_BLOCK, "packed": INT4_PACKED}


def _mx(dtype: str) -> QConfig:
    return QConfig(dtype=dtype, scope="per_block", symmetric=True, method="minmax")


_INT8_TOKEN = QConfig(dtype="int8", scope="per_token", symmetric=True, method="minmax")
_INT8_CHANNEL = QConfig(dtype="int8", scope="per_channel", symmetric=True, method="minmax")

#: Target tag -> the data-free qconfig that produces it (weights from their own range, activations at run time).
QUANT_TARGETS: dict[str, LinearQConfig] = {
    "W8A8_MXFP8": LinearQConfig(act=_mx("mxfp8"), weight=_mx("mxfp8")),
    "W4A8_MXFP": LinearQConfig(act=_mx("mxfp8"), weight=_mx("mxfp4")),
    "W4A4_MXFP4": LinearQConfig(act=_mx("mxfp4"), weight=_mx("mxfp4")),
    "W8A8_DYNAMIC": LinearQConfig(act=_INT8_TOKEN, weight=_INT8_CHANNEL),
}
TARGETS = (FLOAT, *QUANT_TARGETS)
KINDS = (*SOURCE_KINDS, *QUANT_TARGETS)

#: The one-step conversions that exist.
EDGES = frozenset({(FP8_BLOCK, FLOAT), (INT4_PACKED, FLOAT)} | {(FLOAT, target) for target in QUANT_TARGETS})


def auto_route(source: str, target: str) -> list[str]:
    """source -> [FLOAT] -> target, without repeating a step."""
    route = [source]
    if source != FLOAT:
        route.append(FLOAT)
    if target != FLOAT:
        route.append(target)
    return route


def route_problem(route: list[str], target: str) -> str | None:
    """Why an explicit route cannot be followed (None when every step is a known conversion ending at target)."""
    if route[-1] != target:
        return f"ends at {route[-1]} but target is {target}"
    if route[0] not in SOURCE_KINDS:
        return f"starts at {route[0]}, which is not a source format ({', '.join(SOURCE_KINDS)})"
    for step in zip(route, route[1:]):
        if step not in EDGES:
            return (f"has no conversion {step[0]} -> {step[1]}; conversions: "
                    + ", ".join(f"{a} -> {b}" for a, b in sorted(EDGES)))
    return None
