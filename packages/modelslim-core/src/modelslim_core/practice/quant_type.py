"""Quant-type strings such as `w8a8c8`, and the bit label they stand for.

The CLI's `--quant_type` and a practice's `metadata.label` are two spellings of the same thing; parsing the
string into a `QuantLabel` lets the library compare them field by field instead of by string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelslim_core.errors import ConfigError
from modelslim_core.quant_types import DEFAULT_QUANT_TYPE, QUANT_TYPES

__all__ = ["DEFAULT_QUANT_TYPE", "QUANT_TYPES", "QuantLabel", "parse_quant_type"]

_GRAMMAR = re.compile(r"w(?P<w>\d+)a(?P<a>\d+)(?:(?P<kv>c8)|f(?P<fa>[48]))?(?P<sparse>s)?")


@dataclass(frozen=True)
class QuantLabel:
    """What a quant type means: weight/activation bits, KV-cache int8, FA3 attention bits, sparsity."""

    w_bit: int
    a_bit: int
    kv_cache: bool = False
    fa_bit: int | None = None
    is_sparse: bool = False

    def __str__(self) -> str:
        """The canonical quant-type spelling, so messages can name a practice's label the way users type it."""
        kv = "c8" if self.kv_cache else ""
        fa = f"f{self.fa_bit}" if self.fa_bit is not None else ""
        sparse = "s" if self.is_sparse else ""
        return f"w{self.w_bit}a{self.a_bit}{kv}{fa}{sparse}"


def parse_quant_type(text: str) -> QuantLabel:
    """Parse a quant type (any case); anything outside `QUANT_TYPES` is a ConfigError listing the valid values."""
    name = text.strip().lower()
    match = _GRAMMAR.fullmatch(name)
    if name not in QUANT_TYPES or match is None:
        raise ConfigError(
            f"unknown quant type {text!r}.",
            f"valid quant types: {', '.join(QUANT_TYPES)}.",
        )
    return QuantLabel(
        w_bit=int(match["w"]),
        a_bit=int(match["a"]),
        kv_cache=match["kv"] is not None,
        fa_bit=int(match["fa"]) if match["fa"] else None,
        is_sparse=match["sparse"] is not None,
    )
