"""Quant-type parsing: the reference's 12 strings plus our w4a16, their labels, and the error for anything else."""

from __future__ import annotations

import pytest

from modelslim_core.errors import ConfigError
from modelslim_core.practice import QUANT_TYPES, QuantLabel, parse_quant_type


def test_the_reference_quant_types_plus_w4a16_each_round_trip() -> None:
    assert len(QUANT_TYPES) == 13 and "w4a16" in QUANT_TYPES  # w4a16 is ours (compressed-tensors output)
    for name in QUANT_TYPES:
        assert str(parse_quant_type(name)) == name


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("w8a8", QuantLabel(8, 8)),
        ("W8A16", QuantLabel(8, 16)),
        ("w4a8c8", QuantLabel(4, 8, kv_cache=True)),
        ("w8a8F8", QuantLabel(8, 8, fa_bit=8)),
        ("w4a4f4", QuantLabel(4, 4, fa_bit=4)),
        ("w8a8s", QuantLabel(8, 8, is_sparse=True)),
        ("W16A16S", QuantLabel(16, 16, is_sparse=True)),
    ],
)
def test_parse_quant_type_is_case_insensitive(text: str, label: QuantLabel) -> None:
    assert parse_quant_type(text) == label


@pytest.mark.parametrize("text", ["w2a2", "w8a8c4", "int8", "", "w8a8s8", "w8a8c8s"])
def test_unknown_quant_type_lists_valid_values(text: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_quant_type(text)
    assert repr(text) in str(err.value)
    assert all(name in str(err.value) for name in QUANT_TYPES)
