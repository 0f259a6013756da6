"""The `metadata` block of a practice file: identity, score, bit label and what it was verified on.

Validated strictly and with unknown keys refused (outside `label`), because a typo such as
`verified_model_type:` would otherwise silently make a practice unreachable.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelslim_core.errors import ConfigError
from modelslim_core.practice.quant_type import QuantLabel


class PracticeLabel(BaseModel):
    """The bit label a practice answers to; extra keys are kept for documentation purposes."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    w_bit: int
    a_bit: int
    is_sparse: bool = False
    kv_cache: bool = False
    fa_quant: bool = False
    fa_bit: Literal[4, 8] | None = None

    @property
    def quant_label(self) -> QuantLabel:
        """The label as a `QuantLabel`; `fa_quant` without `fa_bit` means 8-bit FA, as in the reference."""
        fa_bit = self.fa_bit if self.fa_bit is not None else (8 if self.fa_quant else None)
        return QuantLabel(
            w_bit=self.w_bit,
            a_bit=self.a_bit,
            kv_cache=self.kv_cache,
            fa_bit=fa_bit,
            is_sparse=self.is_sparse,
        )


class PracticeMetadata(BaseModel):
    """A practice's `metadata`: ranking (`score`, then `config_id`) and the scope it was verified for."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    config_id: str = Field(default="Unknown", max_length=200)
    score: float = Field(default=100.0, ge=0)
    label: PracticeLabel
    verified_model_types: list[str] = []
    verified_tags: dict[str, list[list[str]]] = {}


def label_matches(label: PracticeLabel, wanted: QuantLabel) -> bool:
    """Whether a practice's label answers a requested quant type (every field equal, spec 2.2)."""
    return label.quant_label == wanted


def parse_metadata(raw: Any, source: str) -> PracticeMetadata:
    """Validate a raw `metadata` mapping; errors name the file and each offending `metadata.` field."""
    try:
        return PracticeMetadata.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"metadata.{'.'.join(str(part) for part in err['loc'])}: {err['msg']}" if err["loc"] else f"metadata: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(
            f"practice file {source} has invalid metadata: {problems}.",
            "metadata needs label.w_bit and label.a_bit; see the practice schema for the optional fields.",
        ) from None
