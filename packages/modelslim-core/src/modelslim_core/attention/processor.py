"""The lifecycle the attention processors share: select attention modules by name, tap their Q/K/V during the
unit's one calibration forward, and turn what the taps saw into a result once the forward is done.

Subclasses say what a tap does with the states of one site (`tap_for`, observation only) and what to do
with each site afterwards (`finish_site`). A quantizing processor also returns a `final_tap` that applies the
finished parameters: it stays on the site while the runner re-runs the unit (`outputs_stale`), so the next
unit calibrates on the outputs the quantized checkpoint computes, and is removed before the next unit.
Observing with the final parameters only (not with ranges that are still growing) keeps a data-parallel run
identical to a single-process one: statistics are complete and all-reduced before they are applied.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from modelslim_core.attention.sites import AttentionSite
from modelslim_core.attention.taps import Tap, add_tap, remove_tap
from modelslim_core.errors import ConfigError, DatasetError
from modelslim_core.runtime.matching import Aliases, NameFilter, adapter_aliases
from modelslim_core.runtime.processor import Processor, ProcessorConfig
from modelslim_core.runtime.unit import Unit

#: What an attention processor can act on, for the refusal below (attention/sites.py decides it).
SUPPORTED_SITES = ("attention modules that own q_proj, k_proj and v_proj linears and hand per-head query/key/value "
                   "states to the attention kernel (Llama, Qwen2/2.5/3, Qwen3-MoE, GLM-4.5-4.7, MiniMax-M2, the "
                   "full-attention layers of Qwen3-Next/Qwen3.5, and diffusers attention in the SD pipelines)")
#: How many attention module names a refusal shows as examples.
EXAMPLES = 3


def site_filter(config: ProcessorConfig, aliases: Aliases | None) -> NameFilter:
    """The include/exclude filter an attention processor applies to attention module names."""
    return NameFilter(getattr(config, "include", None) or ["*"], getattr(config, "exclude", None) or [], aliases)


class AttentionProcessor(Processor, ABC):
    """Base of processors that calibrate on the states at attention modules (matched by module name)."""

    #: What the processor computes, for messages ("KV-cache int8 scales", ...).
    produces: ClassVar[str]

    def __init__(self, config, context):
        super().__init__(config, context)
        self.filter: NameFilter = self.name_filter()
        self._sites: list[AttentionSite] = []
        self._finals: list[AttentionSite] = []

    @classmethod
    def needs_data(cls, config) -> bool:
        """Observing attention states needs calibration data (fa3_quant with dynamic branches only does not)."""
        return True

    @classmethod
    def supports_distributed(cls, config) -> bool:
        """Yes, for every attention processor: its statistics are MIN/MAX all-reduced once per unit
        (`synchronize`) before they are used, so ranks with different samples end with the same result."""
        return True

    def name_filter(self) -> NameFilter:
        return site_filter(self.config, adapter_aliases(self.context))

    @property
    def tap_key(self) -> str:
        return f"{self.config.type}@{id(self)}"

    @property
    def final_key(self) -> str:
        return f"{self.tap_key}:final"

    @abstractmethod
    def tap_for(self, site: AttentionSite) -> Tap | None:
        """The tap of one selected site (None: nothing to observe, e.g. only dynamic quantization)."""

    def final_tap(self, site: AttentionSite) -> Tap | None:
        """After `finish_site`: the tap applying the finished parameters (None: the function is unchanged)."""
        return None

    def start_site(self, site: AttentionSite) -> None:
        """Before the forward, e.g. data-free work; the default does nothing."""

    @abstractmethod
    def finish_site(self, site: AttentionSite) -> None:
        """After the forward (statistics are complete and synchronized)."""

    def synchronize(self) -> None:
        """Reduce this unit's statistics across data-parallel ranks (a collective; called once per unit)."""

    def observed(self, site: AttentionSite) -> bool:
        """Whether the calibration forward reached the site (checked before `finish_site`)."""
        return True

    def _drop_finals(self) -> None:
        for site in self._finals:
            remove_tap(site.module, self.final_key)
        self._finals = []

    def preprocess(self, unit: Unit) -> None:
        self._drop_finals()
        self._sites = [site for site in self.context.adapter.attention_sites(unit)
                       if unit.covers_site(site.name) and self.filter(site.name)]  # a piece: only its own sites
        for site in self._sites:
            self.start_site(site)
            tap = self.tap_for(site)
            if tap is not None:
                add_tap(site.module, self.tap_key, tap)

    def needs_forward(self, unit: Unit) -> bool:
        return any(self.observes(site) for site in self._sites)

    def observes(self, site: AttentionSite) -> bool:
        """Whether the site needs calibration data (its tap records statistics)."""
        return True

    def postprocess(self, unit: Unit) -> None:
        for site in self._sites:
            remove_tap(site.module, self.tap_key)
        self.synchronize()
        for site in self._sites:
            if self.observes(site) and not self.observed(site):
                raise DatasetError(
                    f"{site.name} received no calibration data, so its {self.produces} cannot be computed.",
                    "use calibration data that reaches every decoder layer.",
                )
            self.finish_site(site)
            final = self.final_tap(site)
            if final is not None:
                add_tap(site.module, self.final_key, final)
                self._finals.append(site)
        self._sites = []

    def outputs_stale(self, unit: Unit) -> bool:
        return bool(self._finals)

    def state_dict(self) -> dict:
        return {"used_patterns": self.filter.used_patterns}

    def load_state_dict(self, state: dict) -> None:
        self.filter.mark_used(state.get("used_patterns", []))

    def post_run(self) -> None:
        self._drop_finals()
        self.filter.warn_unmatched(self.config.type)


def attention_configs(configs: Iterable[ProcessorConfig], path: str = "spec.process") -> Iterator[tuple[str, ProcessorConfig]]:
    """(YAML path, config) of every attention processor among `configs`, looking inside groups."""
    from modelslim_core.protocol.spec import processor_class

    for index, config in enumerate(configs):
        where = getattr(config, "_yaml_path", "") or f"{path}[{index}]"
        children = getattr(config, "configs", None)
        if isinstance(children, list) and config.type == "group":
            yield from attention_configs(children, f"{where}.configs")
        elif issubclass(processor_class(config), AttentionProcessor):
            yield where, config


def check_attention_selections(adapter: Any, units: list[Unit], configs: Iterable[ProcessorConfig]) -> None:
    """ConfigError for the first attention processor (dynamic_cache, fa3_quant, kv_smooth, online_quarot) whose
    targets match none of the model's supported attention sites.

    Such a run would finish without error and write a checkpoint that lacks what the config asked for (no KV
    scales, yet a serving engine told to use an int8 cache), so it is refused before any calibration. The
    message names the model type and what the processor supports; an adapter may add why its family has no
    such site (`attention_note`, e.g. GLM-5's compressed attention).
    """
    from modelslim_core.protocol.spec import processor_class

    selected = list(attention_configs(configs))
    if not selected:
        return
    sites = [site.name for unit in units for site in adapter.attention_sites(unit)]
    aliases = getattr(adapter, "name_aliases", None)
    for path, config in selected:
        if any(site_filter(config, aliases)(name) for name in sites):
            continue
        produces = getattr(processor_class(config), "produces", "results")
        model = f"model type {adapter.model_type!r} (config.json model_type {getattr(adapter, 'hf_model_type', None)!r})"
        if not sites:
            note = getattr(adapter, "attention_note", None)
            raise ConfigError(
                f"{path} ({config.type}): {model} has no attention module {config.type} can act on, so the run "
                f"would finish without the {produces} the config asks for (a checkpoint the engine cannot use as "
                f"asked). {config.type} supports {SUPPORTED_SITES}." + (f" {note}" if note else ""),
                f"remove the {config.type} item from the config for this model (its family's practices without "
                "a KV-cache or FA3 suffix, e.g. --quant_type w8a8, have none).",
            )
        raise ConfigError(
            f"{path} ({config.type}): include {list(getattr(config, 'include', None) or ['*'])} with exclude "
            f"{list(getattr(config, 'exclude', None) or [])} matches none of the {len(sites)} attention modules of "
            f"{model}, so no {produces} would be written.",
            f"write the patterns against the attention module names, e.g. {', '.join(sites[:EXAMPLES])}.",
        )

