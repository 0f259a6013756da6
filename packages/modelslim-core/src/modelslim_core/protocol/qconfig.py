"""The qconfig schema of `linear_quant` (docs/algorithms.md, "qconfig").

`QConfig` describes one quantizer: dtype, scope, symmetric, method and method-specific `ext` keys. All four
main fields are required, as in the reference. `LinearQConfig` pairs an activation and a weight quantizer;
the pair must be exportable, and every method must accept the `ext` keys it is given.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from modelslim_core.formats.export_types import EXPORT_TYPES, supported_pairs
from modelslim_core.protocol.validation import StrictModel, suggestion
from modelslim_core.quant.schemes import (
    ACT_METHODS,
    EXT_KEYS,
    EXT_RULES,
    REFERENCE_EXT_USES,
    REQUIRED_EXT_BY_SCOPE,
    WEIGHT_METHODS,
    Scheme,
    describe_methods,
)

Dtype = Literal["float", "int8", "int4", "mxfp8", "mxfp4", "fp8_e4m3"]
Scope = Literal["per_tensor", "per_channel", "per_group", "per_block", "per_token", "pd_mix", "per_head", "dual_scale"]


class QConfig(StrictModel):
    """One quantizer."""

    dtype: Dtype
    scope: Scope
    symmetric: bool
    method: str
    ext: dict[str, Any] = Field(default_factory=dict)

    @property
    def scheme(self) -> Scheme:
        return Scheme(self.dtype, self.scope, self.symmetric)

    @field_validator("symmetric", mode="before")
    @classmethod
    def _strict_bool(cls, value: Any) -> Any:
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return value


FLOAT_ACT = QConfig(dtype="float", scope="per_tensor", symmetric=True, method="none")


def _check_method(qc: QConfig, table: dict[Scheme, dict[str, frozenset[str]]], role: str) -> None:
    methods = table.get(qc.scheme)
    if methods is None:
        raise ValueError(
            f"{role} scheme {qc.scheme} is not supported; supported {role} schemes: {describe_methods(table)}"
        )
    if qc.method not in methods:
        raise ValueError(
            f"{role} method {qc.method!r} is not available for {qc.scheme}; available: {', '.join(sorted(methods))}"
        )
    allowed = methods[qc.method]
    unread = sorted(set(qc.ext) - allowed)
    unknown = [key for key in unread if key not in REFERENCE_EXT_USES]
    if unknown:
        names = ", ".join(sorted(allowed)) or "none"
        raise ValueError(f"{role} ext keys {unknown} are not used by method {qc.method!r} for {qc.scheme}"
                         f"{suggestion(unknown[0], allowed | set(REFERENCE_EXT_USES))}; allowed: {names}")
    for key in unread:  # keys the reference's configs carry without effect: dropped, with one warning
        del qc.ext[key]
        qc.note_ignored(f"ext.{key}", f"{role} method {qc.method!r} with {qc.scheme} does not read it (it is read "
                                      f"{REFERENCE_EXT_USES[key]})")
    for key in sorted(REQUIRED_EXT_BY_SCOPE.get(qc.scope, frozenset()) - set(qc.ext)):
        raise ValueError(f"{role} scope {qc.scope} needs ext.{key}, {EXT_KEYS[key].rule}")
    for key, value in qc.ext.items():
        if not EXT_KEYS[key].valid(value):
            raise ValueError(f"{role} ext.{key} must be {EXT_KEYS[key].rule}, got {value!r}")
    problem = EXT_RULES[qc.method](qc.ext) if qc.method in EXT_RULES else None
    if problem:
        raise ValueError(f"{role} {problem}")


class LinearQConfig(StrictModel):
    """Activation + weight quantizers of one linear layer; `act` defaults to float (weight-only)."""

    act: QConfig = FLOAT_ACT
    weight: QConfig

    @model_validator(mode="after")
    def _exportable(self) -> "LinearQConfig":
        _check_method(self.act, ACT_METHODS, "act")
        _check_method(self.weight, WEIGHT_METHODS, "weight")
        if (self.act.scheme, self.weight.scheme) not in EXPORT_TYPES:
            raise ValueError(
                f"act {self.act.scheme} with weight {self.weight.scheme} cannot be exported; "
                f"exportable pairs: {supported_pairs()}"
            )
        return self

    @property
    def export_type(self) -> str:
        return EXPORT_TYPES[(self.act.scheme, self.weight.scheme)]
