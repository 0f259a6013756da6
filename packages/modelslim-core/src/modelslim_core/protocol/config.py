"""The top level of a quantization config: `apiversion` selects the service, which validates `spec`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from modelslim_core import registry
from modelslim_core.errors import ConfigError, PluginError

V0_MIGRATION_HINT = (
    "modelslim_v0 is deprecated; `msmodelslim convert-config FILE` prints the equivalent `apiversion: "
    "modelslim_v1` config (its anti-outlier method becomes a smoothing processor, its calibration quant "
    "settings a linear_quant qconfig, its disabled layer names that linear_quant's `exclude` list), and "
    "`msmodelslim quant --config_path FILE` translates it and asks before using it (see README.md "
    "'modelslim_v0 configs')."
)


logger = logging.getLogger(__name__)

#: Top-level keys the services read; others are kept (YAML anchor holders) with a warning.
TOP_LEVEL_KEYS = ("apiversion", "metadata", "spec")


#: Offline checkpoint conversion (docs/convert.md): runs without --model_type.
CONVERT = "modelslim_convert"


@dataclass
class QuantConfig:
    """A validated config: the service class, its parsed spec and the raw mapping (for export)."""

    apiversion: str
    service: Any
    spec: Any
    raw: dict[str, Any]


def parse_quant_config(raw: Any, source: str) -> QuantConfig:
    """Validate a loaded YAML document; errors name the source file and the YAML path."""
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: the top level must be a mapping with `apiversion` and `spec`, got {type(raw).__name__}.",
            "start the file with `apiversion: modelslim_v1` and a `spec:` mapping.",
        )
    apiversion = raw.get("apiversion")
    if not isinstance(apiversion, str):
        raise ConfigError(f"{source}: apiversion: this field is required and must be a string.",
                          f"use one of: {', '.join(registry.names(registry.SERVICES))}.")
    if apiversion == "modelslim_v0":
        raise ConfigError(f"{source}: apiversion: modelslim_v0 is deprecated and must be translated first.",
                          V0_MIGRATION_HINT)
    try:
        service = registry.load(registry.SERVICES, apiversion)
    except PluginError as exc:
        raise ConfigError(f"{source}: apiversion: {exc.message}", exc.hint) from None
    _report_extra_top_level_keys(raw, source)
    if "spec" not in raw:
        raise ConfigError(f"{source}: spec: this field is required.", "add a `spec:` mapping with process and save.")
    try:
        spec = service.parse_spec(raw["spec"], "spec")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}", exc.hint) from None
    return QuantConfig(apiversion=apiversion, service=service, spec=spec, raw=raw)


def _report_extra_top_level_keys(raw: dict[str, Any], source: str) -> None:
    """Keys beside apiversion/metadata/spec are not read. A key that only holds YAML anchors referenced under
    `spec` (a common way to share one qconfig between process items, used by our own practices) has an effect
    and is noted at INFO; any other extra key has none, which deserves a warning."""
    referenced = _container_ids(raw.get("spec"))
    for key, value in raw.items():
        if key in TOP_LEVEL_KEYS:
            continue
        holders = [value, *(value.values() if isinstance(value, dict) else ())]
        if any(id(node) in referenced for node in holders if isinstance(node, (dict, list))):
            logger.info("%s: top-level key %r holds YAML anchors only: it is not read itself, the places that "
                        "reference its anchors are.", source, key)
        else:
            logger.warning("%s: top-level key %r is not read (only %s are) and nothing under spec references it.",
                           source, key, ", ".join(TOP_LEVEL_KEYS))


def _container_ids(node: Any) -> set[int]:
    """Identities of every mapping and list under `node`: the YAML loader returns one shared object for an
    anchor and each of its aliases, so identity tells where an anchor is used."""
    found: set[int] = set()
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, (dict, list)) and id(item) not in found:
            found.add(id(item))
            stack.extend(item.values() if isinstance(item, dict) else item)
    return found
