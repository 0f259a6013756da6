"""Load-time refusal of FA3 settings MindIE-SD would not serve as configured (mindie_format_saver output).

What MindIE-SD 3.1.0's `quantize()` does with an attention's `<attn>.quant_type` entry (checked by running it,
tests/sd/test_mindie_sd_practices.py): it applies exactly three FA types, the same for Q, K and V —
`FP8_DYNAMIC` (fa3_quant fp8_e4m3 per_token), `MXFP8_DYNAMIC` (mxfp8 per_block) and `MXFP4_DYNAMIC`
(mxfp4 per_block); any other string (int8 per_token, or branches with different settings) is skipped
without a word, so that attention would be served in float. Its FP8 and MXFP8 attentions multiply Q and K
by the saved `<attn>.q_rot` / `<attn>.k_rot` and refuse a checkpoint without them, so those types need an
`online_quarot` item selecting every attention the fa3_quant item selects (MXFP4 rotates only when the
tensors are there). Static per-head FA3 (int8 / fp8 per_head scales) is among what it skips: the entry
`INT8` means no FA quantization to it, and it reads no FA scale tensors.
"""

from __future__ import annotations

from collections.abc import Iterator

from modelslim_core.errors import ConfigError
from modelslim_core.runtime.matching import pattern_matches
from modelslim_core.runtime.processor import ProcessorConfig

MINDIE_SAVER = "mindie_format_saver"
#: (dtype, scope) of an fa3_quant branch -> the FA type MindIE-SD applies.
SERVED_FA = {("fp8_e4m3", "per_token"): "FP8_DYNAMIC", ("mxfp8", "per_block"): "MXFP8_DYNAMIC",
             ("mxfp4", "per_block"): "MXFP4_DYNAMIC"}
#: FA types whose MindIE-SD kernel requires the saved Q/K rotations.
NEEDS_ROTATION = frozenset({"FP8_DYNAMIC", "MXFP8_DYNAMIC"})
_SERVED_TEXT = "fp8_e4m3 per_token (FP8_DYNAMIC), mxfp8 per_block (MXFP8_DYNAMIC) or mxfp4 per_block (MXFP4_DYNAMIC)"


def _flat(process: list[ProcessorConfig]) -> Iterator[ProcessorConfig]:
    for config in process:
        yield from _flat(config.configs) if config.type == "group" else (config,)


def _covers(rotation: ProcessorConfig, fa: ProcessorConfig) -> bool:
    """Whether every attention `fa` can select is selected by `rotation`, judged from the patterns alone."""
    included = all(any(pattern_matches(r, f) for r in rotation.include) for f in fa.include)
    excluded_too = all(any(pattern_matches(f, e) for f in fa.exclude) for e in rotation.exclude)
    return included and excluded_too


def _fa_type(config: ProcessorConfig) -> tuple[str | None, str]:
    """(the FA type MindIE-SD applies, or None) and the settings as written."""
    branches = {branch: (qc.dtype, qc.scope) for branch, qc in config.branch_qconfigs().items()}
    settings = set(branches.values())
    if len(settings) > 1:
        return None, "Q, K and V with different settings (" + ", ".join(
            f"{branch.upper()} {dtype} {scope}" for branch, (dtype, scope) in branches.items()) + ")"
    return SERVED_FA.get(next(iter(settings))), " ".join(next(iter(settings)))


def check_mindie_fa(process: list[ProcessorConfig], save: list) -> None:
    """ConfigError for an fa3_quant item MindIE-SD would skip or refuse, when a saver writes for MindIE-SD."""
    if not any(getattr(saver, "type", None) == MINDIE_SAVER for saver in save):
        return
    configs = list(_flat(process))
    rotations = [config for config in configs if config.type == "online_quarot"]
    for config in configs:
        if config.type != "fa3_quant":
            continue
        fa_type, written = _fa_type(config)
        where = f"{config.yaml_path} (attentions {', '.join(config.include)})"
        if fa_type is None:
            raise ConfigError(
                f"{where}: {MINDIE_SAVER} targets MindIE-SD (mindiesd 3.1.0), which applies FA quantization "
                f"only as {_SERVED_TEXT}, the same for Q, K and V; it skips {written} without an error, so these "
                "attentions would be served in float.",
                "use one of those settings for qconfig (all of Q, K, V), or remove this fa3_quant item.",
            )
        if fa_type in NEEDS_ROTATION and not any(_covers(rotation, config) for rotation in rotations):
            raise ConfigError(
                f"{where}: MindIE-SD (mindiesd 3.1.0) serves {fa_type} attention only with the Q/K rotation "
                "of online_quarot: its kernel multiplies Q and K by the saved <attn>.q_rot and <attn>.k_rot, and "
                "its quantize() refuses the checkpoint when they are missing; no online_quarot item selects every "
                "attention this item selects.",
                f"add `- type: online_quarot` with include {list(config.include)} before this item (as the shipped "
                "w8a8f8 / w4a4f8 practices do), or use mxfp4 per_block, which MindIE-SD also serves unrotated.",
            )
