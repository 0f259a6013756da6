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
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            logger.warning("%s: top-level key %r is not read (only %s are); YAML anchors defined under it still "
                           "apply where they are referenced.", source, key, ", ".join(TOP_LEVEL_KEYS))
    if "spec" not in raw:
        raise ConfigError(f"{source}: spec: this field is required.", "add a `spec:` mapping with process and save.")
    try:
        spec = service.parse_spec(raw["spec"], "spec")
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}", exc.hint) from None
    return QuantConfig(apiversion=apiversion, service=service, spec=spec, raw=raw)
