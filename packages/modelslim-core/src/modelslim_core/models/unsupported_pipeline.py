"""The message for a diffusers pipeline directory whose model type no generation adapter handles.

Without it, such a directory falls to the text-model adapter and fails with "no config.json", which sends
the user looking for a file that a pipeline never has.
"""

from __future__ import annotations

import json
from pathlib import Path

from modelslim_core import registry
from modelslim_core.errors import ModelError

SD_APIVERSION = "multimodal_sd_modelslim_v1"


def sd_model_types() -> list[str]:
    """The model types of every installed adapter for the generation (SD) service."""
    names: list[str] = []
    for name in registry.names(registry.MODEL_ADAPTERS):
        try:
            cls = registry.load(registry.MODEL_ADAPTERS, name)
        except Exception:  # a broken plugin is reported where it is used, not here
            continue
        if SD_APIVERSION in getattr(cls, "apiversions", ()):
            names.extend(cls.model_types)
    return sorted(dict.fromkeys(names))


def unsupported_pipeline_error(model_type: str, model_path: Path) -> ModelError:
    """ModelError naming the pipeline class of `model_path/model_index.json` and the supported model types."""
    try:
        pipeline = json.loads((model_path / "model_index.json").read_text(encoding="utf-8")).get("_class_name", "?")
    except (OSError, ValueError, AttributeError):
        pipeline = "?"
    supported = sd_model_types()
    return ModelError(
        f"model_path {str(model_path)!r} is a diffusers pipeline ({pipeline}); model type {model_type!r} is not "
        f"supported by the {SD_APIVERSION} service (supported: {', '.join(supported) or 'none installed'}).",
        "pass one of the supported --model_type values if the pipeline is one of them; other pipelines need a "
        "model adapter plugin (docs/plugin-guide.md).",
    )
