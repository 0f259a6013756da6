"""The best-practice library: quant types, practice files, their roots, and the six-priority lookup."""

from modelslim_core.practice.library import (
    CUSTOM_PRACTICE_REPO_ENV,
    Practice,
    PracticeLibrary,
    load_practice,
    plugin_entry_points,
    plugin_practice_roots,
    practice_roots,
)
from modelslim_core.practice.lookup import DEFAULT_PEDIGREE, Selection, select_practice
from modelslim_core.practice.metadata import PracticeLabel, PracticeMetadata, label_matches, parse_metadata
from modelslim_core.practice.quant_type import DEFAULT_QUANT_TYPE, QUANT_TYPES, QuantLabel, parse_quant_type
from modelslim_core.practice.verification import Verdict, normalize_tag, verify

__all__ = [
    "CUSTOM_PRACTICE_REPO_ENV",
    "DEFAULT_PEDIGREE",
    "DEFAULT_QUANT_TYPE",
    "QUANT_TYPES",
    "Practice",
    "PracticeLabel",
    "PracticeLibrary",
    "PracticeMetadata",
    "QuantLabel",
    "Selection",
    "Verdict",
    "label_matches",
    "load_practice",
    "normalize_tag",
    "parse_metadata",
    "parse_quant_type",
    "plugin_entry_points",
    "plugin_practice_roots",
    "practice_roots",
    "select_practice",
    "verify",
]
