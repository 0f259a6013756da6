"""Dispatching YAML items to the plugins that own them.

`spec.process` / `spec.save` items are mappings keyed by `type`; the type names a plugin found through
entry points, and that plugin's pydantic config validates the rest of the item. Errors carry the YAML
path of the item (`spec.process[1].type`, `spec.process[0].configs[2].qconfig.act.scope`).
"""

from __future__ import annotations

import logging
from typing import Any

from modelslim_core import registry
from modelslim_core.errors import ConfigError, PluginError
from modelslim_core.protocol.saver_choice import saver_for
from modelslim_core.runtime.context import RunContext
from modelslim_core.runtime.processor import Processor, ProcessorConfig
from modelslim_core.runtime.saver import Saver, SaverConfig


def _item_type(item: Any, path: str) -> str:
    if not isinstance(item, dict):
        raise ConfigError(
            f"{path} must be a mapping with a `type` key, got {type(item).__name__} {item!r}.",
            "check the YAML indentation of that list item (`- type: ...` followed by its fields).",
        )
    kind = item.get("type")
    if not isinstance(kind, str) or not kind:
        raise ConfigError(f"{path}.type: this field is required and must be a string.", "add `type: <name>`.")
    return kind


logger = logging.getLogger(__name__)

#: Saver names of the reference tool -> the saver that writes the same format here.
SAVER_ALIASES = {
    "compressed_tensors": "compressed_tensors_saver",
    "ascendv1": "ascendv1_saver",
    "ascend_v1": "ascendv1_saver",
    "ascendv1_saver_distributed": "ascendv1_saver",  # ours writes data-parallel runs itself
    "mindie_format": "mindie_format_saver",
}


def _canonical_saver(item: Any, path: str) -> Any:
    """The item with a reference saver name replaced by ours (logged), anything else unchanged."""
    if isinstance(item, dict) and item.get("type") in SAVER_ALIASES:
        name = SAVER_ALIASES[item["type"]]
        logger.info("%s.type: %r is the reference tool's name for %s; using %s.", path, item["type"], name, name)
        return {**item, "type": name}
    return item


def _plugin(group: str, kind: str, path: str) -> Any:
    try:
        return registry.load(group, kind)
    except PluginError as exc:
        raise ConfigError(f"{path}.type: {exc.message}", exc.hint) from None


def _parse_items(items: Any, path: str, group: str, what: str, example: str, allow_empty: bool) -> list[Any]:
    if not isinstance(items, list) or (not items and not allow_empty):
        raise ConfigError(f"{path} must be a {'' if allow_empty else 'non-empty '}list of {what}.", f"write it as a YAML list, e.g. {example}.")
    configs = []
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]"
        cls = _plugin(group, _item_type(item, item_path), item_path)
        configs.append(cls.config_class.from_yaml(item, item_path))
    return configs


def parse_processor_list(items: Any, path: str) -> list[ProcessorConfig]:
    """Validate a list of processor items (spec.process, a prior stage, a group's configs)."""
    return _parse_items(items, path, registry.PROCESSORS, "processors", "`- type: linear_quant`", allow_empty=True)


def default_savers(process: list[ProcessorConfig], path: str) -> list[SaverConfig]:
    """What an omitted `spec.save` means: ascendv1_saver with its defaults (compressed_tensors_saver when the
    processors produce a type only that one writes), announced in the log. The reference tool writes nothing
    then, which turns an hour of calibration into no output."""
    produced = frozenset().union(*(config.export_types() for config in process))
    saver = saver_for(produced)
    logger.info("%s is not set: writing the result with %s and its default settings (set %s to choose).",
                path, saver, path)
    return parse_saver_list([{"type": saver}], path)


def parse_saver_list(items: Any, path: str, process: list[ProcessorConfig] | None = None) -> list[SaverConfig]:
    """Validate spec.save; when it is omitted (None) and `process` is given, the default saver."""
    if items is None and process is not None:
        return default_savers(process, path)
    if isinstance(items, list):
        items = [_canonical_saver(item, f"{path}[{index}]") for index, item in enumerate(items)]
    return _parse_items(items, path, registry.SAVERS, "savers", "`- type: ascendv1_saver`", allow_empty=False)


def _saver_writes(name: str, tags: list[str]) -> bool:
    writes = registry.load(registry.SAVERS, name).writes
    return writes is None or set(tags) <= writes


def _check_per_group(process: list[ProcessorConfig], save: list[SaverConfig], path: str) -> None:
    grouped = [(index, tag) for index, config in enumerate(process) for tag in sorted(config.per_group_export_types())]
    for index, config in enumerate(save):
        if grouped and not registry.load(registry.SAVERS, config.type).writes_per_group:
            where, tag = grouped[0]
            raise ConfigError(
                f"{path}.save[{index}].type: {config.type} cannot write per-group weights ({tag} with "
                f"scope per_group from {path}.process[{where}]); its format has no group_size.",
                "use ascendv1_saver for per-group layers, or quantize them with scope per_channel.",
            )


def check_savers_can_write(process: list[ProcessorConfig], save: list[SaverConfig], path: str) -> None:
    """Refuse, at load time, a saver that cannot write a layer type (or per-group layout) some processor produces."""
    _check_per_group(process, save, path)
    produced: dict[str, str] = {}
    for index, config in enumerate(process):
        for tag in sorted(config.export_types()):
            produced.setdefault(tag, f"{path}.process[{index}]")
    for index, config in enumerate(save):
        missing = [tag for tag in produced if not _saver_writes(config.type, [tag])]
        if not missing:
            continue
        writes = registry.load(registry.SAVERS, config.type).writes or frozenset()
        able = [name for name in registry.names(registry.SAVERS) if _saver_writes(name, missing)]
        raise ConfigError(
            f"{path}.save[{index}].type: {config.type} cannot write "
            + ", ".join(f"{tag} layers (from {produced[tag]})" for tag in missing)
            + f"; it writes {', '.join(sorted(writes))}.",
            f"use {' or '.join(able) if able else 'another saver'} for these types, or change the qconfig.",
        )


def processor_class(config: ProcessorConfig) -> type[Processor]:
    return registry.load(registry.PROCESSORS, config.type)


def build_processor(config: ProcessorConfig, context: RunContext) -> Processor:
    return processor_class(config)(config, context)


def build_saver(config: SaverConfig, context: RunContext) -> Saver:
    return registry.load(registry.SAVERS, config.type)(config, context)
