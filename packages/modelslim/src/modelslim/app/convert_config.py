"""`msmodelslim convert-config OLD.yaml`: print the modelslim_v1 translation of a modelslim_v0 config.

Only the YAML goes to stdout (so `> new.yaml` captures a usable file); the translation notes are YAML
comments in it. If the translation uses a processor this installation does not have (e.g. a smoothing
processor from an optional package), a warning says so on stderr; the YAML is still printed.
"""

from __future__ import annotations

import logging

from modelslim_core.errors import ConfigError
from modelslim_core.protocol.config import parse_quant_config
from modelslim_core.protocol.v0_translate import V0, translate_v0
from modelslim_core.protocol.yaml_io import load_yaml_file

logger = logging.getLogger("modelslim")


def convert_config(path: str) -> str:
    raw = load_yaml_file(path)
    apiversion = raw.get("apiversion") if isinstance(raw, dict) else None
    if apiversion != V0:
        raise ConfigError(f"{path}: apiversion: convert-config translates {V0} configs, this file says {apiversion!r}.",
                          "pass a file with `apiversion: modelslim_v0`; other versions need no translation.")
    translation = translate_v0(raw, path)
    try:
        parse_quant_config(translation.config, f"translation of {path}")
    except ConfigError as exc:
        logger.warning("The translated config does not validate in this installation: %s %s", exc.message, exc.hint or "")
    return translation.to_yaml(path)
