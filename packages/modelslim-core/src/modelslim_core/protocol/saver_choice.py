"""Which built-in saver to write when a config is generated rather than written by hand (v0 translation,
benchmarks): ascendv1 for everything vLLM-Ascend loads from it, compressed-tensors for the int4 schemes it
does not (W4A16, per-group W4A8)."""

from __future__ import annotations

from modelslim_core import registry

ASCEND_SAVER = "ascendv1_saver"
CT_SAVER = "compressed_tensors_saver"


def _writes(saver: str, export_type: str) -> bool:
    if saver not in registry.names(registry.SAVERS):
        return False
    writes = registry.load(registry.SAVERS, saver).writes
    return writes is None or export_type in writes


def saver_for(export_types: set[str] | frozenset[str]) -> str:
    """ascendv1_saver if it writes every type, else compressed_tensors_saver if that does (else ascendv1_saver,
    whose load-time refusal then names the type)."""
    if all(_writes(ASCEND_SAVER, tag) for tag in export_types):
        return ASCEND_SAVER
    return CT_SAVER if all(_writes(CT_SAVER, tag) for tag in export_types) else ASCEND_SAVER
