"""`{model_type}_best_practice.yaml`: the config a run used, self-contained, next to its output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelslim_core.protocol.yaml_io import dump_yaml

_METADATA_DEFAULTS = {"config_id": "Unknown", "score": 100.0, "label": {}, "verified_model_types": [], "verified_tags": {}}


def normalized_config(raw: dict[str, Any]) -> dict[str, Any]:
    """apiversion, spec, metadata (with defaults), then any anchor-holder keys; aliases expanded."""
    metadata = {**_METADATA_DEFAULTS, **(raw.get("metadata") or {})}
    metadata["score"] = float(metadata["score"])
    extras = {k: v for k, v in raw.items() if k not in ("apiversion", "spec", "metadata")}
    return {"apiversion": raw["apiversion"], "spec": raw["spec"], "metadata": metadata, **extras}


def export_path(save_path: Path, model_type: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in model_type)
    return save_path / f"{safe}_best_practice.yaml"


def export_config(raw: dict[str, Any], save_path: Path, model_type: str) -> Path:
    path = export_path(save_path, model_type)
    path.write_text(dump_yaml(normalized_config(raw)), encoding="utf-8")
    return path
