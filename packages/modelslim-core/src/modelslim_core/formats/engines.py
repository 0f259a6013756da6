"""Which serving engine loads which checkpoint tag, and the load-time refusal of everything else.

The facts here were established by running each engine's own loader on our output (tests/engines): for
vLLM-Ascend 0.23.0 its `AscendModelSlimConfig` scheme registry and the parameters each scheme allocates;
for MindIE-SD 3.1.0 its `quantize()`. A run whose target engine cannot load one of the layer schemes its
YAML asks for is refused before the model is loaded, naming the YAML item, its layer patterns, the reason
and an alternative. The target engine comes from the saver and `--tag` (see `target_engine`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

VLLM_ASCEND = "vllm-ascend"
VLLM_ASCEND_310P = "vllm-ascend-310p"
MINDIE_SD = "mindie-sd"

#: Engine versions whose loaders these tables were proven against (tests/engines).
ENGINE_VERSIONS = {VLLM_ASCEND: "vllm-ascend 0.23.0", VLLM_ASCEND_310P: "vllm-ascend 0.23.0 (310P path)",
                   MINDIE_SD: "mindiesd 3.1.0"}
ENGINE_NAMES = {VLLM_ASCEND: "vLLM-Ascend", VLLM_ASCEND_310P: "vLLM-Ascend on Atlas 300I (310P)",
                MINDIE_SD: "MindIE-SD"}

#: `--tag` values (normalised: lower case, '-' as '_') that name an Atlas 300I / 310P deployment.
TAGS_310P = frozenset({"310p", "atlas_300i", "atlas_300i_duo", "300i_duo", "atlas_300i_pro"})
#: `--tag` values that name MindIE LLM serving, whose loader is not on the package registry (nothing refused).
TAGS_MINDIE_LLM = frozenset({"mindie", "mindie_llm"})


@dataclass(frozen=True)
class Support:
    """How an engine loads one tag: which variants it reads correctly."""

    per_group: bool = False  # per-group weight scales ([out, in/group]); False: only [out, 1]
    asymmetric_weights: bool = True  # False: the kernel ignores weight_offset
    experts_only: bool = False  # registered for MoE experts only (dense linears fail)
    mla_only: bool = False  # attention quantization only on MLA (DeepSeek-style) attention


_PLAIN = Support()
#: engine -> tag -> how it loads. A tag missing from an engine's table is not loaded by it.
SUPPORT: dict[str, dict[str, Support]] = {
    VLLM_ASCEND: {
        "W8A8": _PLAIN,
        "W8A8_MIX": _PLAIN,
        "W8A8_DYNAMIC": Support(asymmetric_weights=False),
        "W8A16": _PLAIN,
        "W4A4_DYNAMIC": Support(asymmetric_weights=False),
        "W4A8_DYNAMIC": Support(asymmetric_weights=False, experts_only=True),
        "W8A8FP8_DYNAMIC": _PLAIN,
        "W8A8_MXFP8": Support(per_group=True),
        "W4A8_MXFP": Support(per_group=True),
        "W4A4_MXFP4": Support(per_group=True),
        "C8": _PLAIN,
        "FAQuant": Support(mla_only=True),
    },
    VLLM_ASCEND_310P: {  # served in float16 (no bf16 on 310P): deq_scale is the int64 layout
        "W8A8": _PLAIN,
        "W8A8S": _PLAIN,
    },
    MINDIE_SD: {  # MX layers and the FA quantizers verified with mindiesd 3.1.0's quantize() on the generation practices
        "W8A8": _PLAIN,
        "W8A8_DYNAMIC": Support(asymmetric_weights=False),
        "W8A8_MXFP8": Support(per_group=True),
        "W4A4_MXFP4": Support(per_group=True),
        "W4A4_MXFP4_DUALSCALE": Support(per_group=True),
    },
}

#: What to do instead, per tag, when the target engine does not load it.
ALTERNATIVES: dict[str, str] = {
    "W16A16S": "serve it with MindIE (--tag MindIE), or use --quant_type w8a8 for vLLM-Ascend",
    "W8A8S": "target an Atlas 300I (--tag 310P; served in float16), or use W8A8 (--quant_type w8a8)",
    "W4A8_DYNAMIC": "use W4A8_DYNAMIC on MoE experts only (include: ['*mlp.experts.*']) and W8A8_DYNAMIC elsewhere, "
                    "or compressed_tensors_saver for int4 dense linears",
    "W4A16": "save with compressed_tensors_saver",
    "W4A8_DYNAMIC_PER_GROUP": "save with compressed_tensors_saver",
    "FAQuant": "drop fa3_quant for this model (vLLM-Ascend reads FA scales only on MLA attention), or use dynamic_cache (C8)",
}


def normalise_tag(tag: str) -> str:
    return tag.strip().lower().replace("-", "_")


def target_engine(saver_type: str, tags: Iterable[str] | None) -> str | None:
    """The engine a saver's output is checked against: MindIE-SD for mindie_format_saver; for ascendv1_saver
    vLLM-Ascend unless `--tag` names a 310P deployment or MindIE LLM (not checked: its loader is not public)."""
    if saver_type == "mindie_format_saver":
        return MINDIE_SD
    if saver_type != "ascendv1_saver":
        return None
    wanted = {normalise_tag(tag) for tag in tags or ()}
    if wanted & TAGS_310P:
        return VLLM_ASCEND_310P
    if wanted & TAGS_MINDIE_LLM:
        return None
    return VLLM_ASCEND


@dataclass(frozen=True)
class Refusal:
    path: str
    include: tuple[str, ...]
    tag: str
    reason: str
    alternative: str

    def __str__(self) -> str:
        patterns = ", ".join(self.include)
        return f"{self.path} (layers {patterns}): {self.tag} {self.reason}; instead, {self.alternative}"


def _experts_only(include: tuple[str, ...]) -> bool:
    return all(".experts." in pattern and "shared_experts" not in pattern for pattern in include)


def refusals(engine: str, schemes, model_config: dict) -> list[Refusal]:
    """Every layer scheme (runtime.processor.LayerScheme) `engine` cannot load, with why and what instead."""
    table = SUPPORT[engine]
    name = ENGINE_NAMES[engine]
    found = []
    for scheme in schemes:
        support = table.get(scheme.tag)
        if support is None:
            found.append(Refusal(scheme.path, scheme.include, scheme.tag, f"is not a scheme {name} loads",
                                 ALTERNATIVES.get(scheme.tag, f"choose a type {name} loads: {', '.join(table)}")))
            continue
        if scheme.per_group and not support.per_group:
            found.append(Refusal(scheme.path, scheme.include, scheme.tag,
                                 f"with per_group weights is not loadable by {name} (it allocates one scale per output "
                                 "channel, [out, 1], and its weight loader rejects [out, in/group_size])",
                                 "use scope per_channel, or save with compressed_tensors_saver"))
        if not scheme.symmetric_weights and not support.asymmetric_weights:
            found.append(Refusal(scheme.path, scheme.include, scheme.tag,
                                 f"with asymmetric weights would be served wrongly: {name}'s kernel ignores weight_offset",
                                 "use symmetric: true for the weights"))
        if support.experts_only and not _experts_only(scheme.include):
            found.append(Refusal(scheme.path, scheme.include, scheme.tag,
                                 f"is loaded by {name} only for MoE experts (its dense-linear scheme needs a second "
                                 "per-group scale this format does not carry)", ALTERNATIVES[scheme.tag]))
        if support.mla_only and "kv_lora_rank" not in model_config:
            found.append(Refusal(scheme.path, scheme.include, scheme.tag,
                                 f"on non-MLA attention is not loadable by {name} (it maps fa_q/fa_k/fa_v scales only "
                                 "into DeepSeek-style MLA attention)", ALTERNATIVES[scheme.tag]))
    return found


def _processor_configs(spec) -> list:
    configs = list(getattr(spec, "process", []) or [])
    for stage in getattr(spec, "prior", []) or []:
        configs += list(getattr(stage, "process", []) or [])
    return configs


def check_target_engines(spec, tags: Iterable[str] | None, model_config: dict, source: str) -> None:
    """Refuse (ConfigError) a config whose saver's target engine cannot load a layer scheme the config asks for."""
    from modelslim_core.errors import ConfigError  # noqa: PLC0415
    from modelslim_core.rotation.export import ROTATION_EXTRAS  # noqa: PLC0415

    # QuaRot extras are saver capabilities (rotation tensors beside the weights), not layer schemes an engine loads.
    schemes = [scheme for config in _processor_configs(spec) for scheme in config.layer_schemes()
               if scheme.tag != ROTATION_EXTRAS]
    for saver in getattr(spec, "save", []) or []:
        engine = target_engine(saver.type, tags)
        if engine is None:
            continue
        if engine == VLLM_ASCEND_310P and getattr(saver, "serving_dtype", None) == "auto":
            saver.serving_dtype = "float16"  # Atlas 300I serves float16 only: int64 deq_scale
        found = refusals(engine, schemes, model_config)
        if found:
            raise ConfigError(
                f"{source}: {saver.type} would write a checkpoint {ENGINE_NAMES[engine]} ({ENGINE_VERSIONS[engine]}) "
                "cannot load: " + " | ".join(str(refusal) for refusal in found) + ".",
                "change those items as suggested, or name another serving engine with --tag "
                "(310P for Atlas 300I, MindIE for MindIE LLM); docs/formats.md lists what each engine loads.",
            )
