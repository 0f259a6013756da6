"""The load-time refusal of everything the target serving engine cannot load.

What each engine loads comes from the tag registry (formats/tags.py, facts established by running the engines'
own loaders in tests/engines). A run whose target engine cannot load one of the layer schemes its YAML asks for
is refused before the model is loaded, naming the YAML item, its layer patterns, the reason and an alternative.
The target engine comes from the saver and `--tag` (see `target_engine`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from modelslim_core.formats.registry import (ENGINE_NAMES, ENGINE_VERSIONS, MINDIE_SD, VLLM_ASCEND, VLLM_ASCEND_310P,
                                             TagRegistry)
from modelslim_core.formats.tags import TAGS

__all__ = ["ENGINE_NAMES", "ENGINE_VERSIONS", "MINDIE_SD", "VLLM_ASCEND", "VLLM_ASCEND_310P", "check_target_engines",
           "refusals", "target_engine"]

#: `--tag` values (normalised: lower case, '-' as '_') that name an Atlas 300I / 310P deployment.
TAGS_310P = frozenset({"310p", "atlas_300i", "atlas_300i_duo", "300i_duo", "atlas_300i_pro"})
#: `--tag` values that name MindIE LLM serving, whose loader is not on the package registry (nothing refused).
TAGS_MINDIE_LLM = frozenset({"mindie", "mindie_llm"})


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


def _loaded_linear(table: dict, registry: TagRegistry) -> list[str]:
    return [tag for tag in registry.tags("linear") if tag in table]


#: Config `model_type`s for which vLLM-Ascend (0.23.0) knows the fused-expert layout of quantized MoE layers (its
#: quantization config's per-model table of packed modules lists their experts). For any other MoE model type
#: its FusedMoE quantization method finds no expert mapping and refuses quantized experts; tests/engines checks
#: this set against the installed package.
VLLM_ASCEND_EXPERT_LAYOUTS = frozenset({
    "bailing_hybrid", "deepseek_mtp", "deepseek_v2", "deepseek_v3", "deepseek_v32", "deepseek_v4", "glm4_moe",
    "glm4_moe_lite", "glm4v_moe", "glm4v_moe_text", "glm_moe_dsa", "kimi_k2", "longcat_flash", "minimax_m2",
    "pangu_ultra_moe", "pangu_ultra_moe_mtp", "qwen3_5_moe", "qwen3_moe", "qwen3_next", "qwen3_omni_moe",
    "qwen3_vl_moe", "step3p5", "step3p5_mtp",
})
#: Expert linear names as the common layouts spell them, to tell whether a YAML item's patterns reach experts.
_EXPERT_PROBES = tuple(f"{prefix}layers.1.mlp.experts.0.{leaf}" for prefix in
                       ("model.", "model.language_model.", "language_model.model.", "thinker.model.", "")
                       for leaf in ("gate_proj", "up_proj", "down_proj", "w1", "w2", "w3"))
_EXPERT_COUNT_KEYS = ("num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts")


def _is_moe(model_config: dict) -> bool:
    configs = [model_config, *(model_config.get(key) or {} for key in ("text_config", "llm_config", "thinker_config"))]
    return any(isinstance(config, dict) and any((config.get(key) or 0) > 1 for key in _EXPERT_COUNT_KEYS)
               for config in configs)


def _reaches_experts(scheme) -> bool:
    return any(any(fnmatchcase(name, pattern) for pattern in scheme.include)
               and not any(fnmatchcase(name, pattern) for pattern in scheme.exclude) for name in _EXPERT_PROBES)


def _experts_only(include: tuple[str, ...]) -> bool:
    return all(".experts." in pattern and "shared_experts" not in pattern for pattern in include)


def refusals(engine: str, schemes, model_config: dict, registry: TagRegistry = TAGS) -> list[Refusal]:
    """Every layer scheme (runtime.processor.LayerScheme) `engine` cannot load, with why and what instead."""
    table = registry.support(engine)
    name = ENGINE_NAMES[engine]
    found = []
    for scheme in schemes:
        support = table.get(scheme.tag)
        fmt = registry.get(scheme.tag)
        alternative = fmt.alternative if fmt is not None and fmt.alternative else None
        if support is None:
            reason = fmt.unloaded if fmt is not None and fmt.unloaded else f"is not a scheme {name} loads"
            found.append(Refusal(scheme.path, scheme.include, scheme.tag, reason,
                                 alternative or f"choose a type {name} loads: {', '.join(_loaded_linear(table, registry))}"))
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
                                 "per-group scale this format does not carry)", alternative or "use it on MoE experts only"))
        model_type = model_config.get("model_type", "")
        quantizes_linears = fmt is None or fmt.kind == "linear"  # not FLOAT, nor extras such as a folded rotation
        if (engine != MINDIE_SD and quantizes_linears and _is_moe(model_config)
                and model_type not in VLLM_ASCEND_EXPERT_LAYOUTS and _reaches_experts(scheme)):
            found.append(Refusal(scheme.path, scheme.include, scheme.tag,
                                 f"on the MoE experts of model type {model_type!r} is not loadable by {name} (its "
                                 "quantization config has no fused-expert layout for this model type)",
                                 "keep the experts float (add '*mlp.experts.*' to this item's exclude), or name "
                                 "another serving engine with --tag"))
        if support.mla_only and "kv_lora_rank" not in model_config:
            found.append(Refusal(scheme.path, scheme.include, scheme.tag,
                                 f"on non-MLA attention is not loadable by {name} (it maps fa_q/fa_k/fa_v scales only "
                                 "into DeepSeek-style MLA attention)", alternative or "drop it for this model"))
    return found


def processor_configs(spec) -> list:
    configs = list(getattr(spec, "process", []) or [])
    for stage in getattr(spec, "prior", []) or []:
        configs += list(getattr(stage, "process", []) or [])
    return configs


def check_target_engines(spec, tags: Iterable[str] | None, model_config: dict, source: str,
                         registry: TagRegistry = TAGS) -> None:
    """Refuse (ConfigError) a config whose saver's target engine cannot load a layer scheme the config asks for."""
    from modelslim_core.errors import ConfigError  # noqa: PLC0415

    schemes = [scheme for config in processor_configs(spec) for scheme in config.layer_schemes()]
    for saver in getattr(spec, "save", []) or []:
        engine = target_engine(saver.type, tags)
        if engine is None:
            continue
        if engine == VLLM_ASCEND_310P and getattr(saver, "serving_dtype", None) == "auto":
            saver.serving_dtype = "float16"  # Atlas 300I serves float16 only: int64 deq_scale
        found = refusals(engine, schemes, model_config, registry)
        if found:
            raise ConfigError(
                f"{source}: {saver.type} would write a checkpoint {ENGINE_NAMES[engine]} ({ENGINE_VERSIONS[engine]}) "
                "cannot load: " + " | ".join(str(refusal) for refusal in found) + ".",
                "change those items as suggested, or name another serving engine with --tag "
                "(310P for Atlas 300I, MindIE for MindIE LLM); docs/formats.md lists what each engine loads.",
            )
