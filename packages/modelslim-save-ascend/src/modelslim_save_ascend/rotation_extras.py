"""Checkpoint extras of a rotated model (QuaRot / adapt_rotation), recorded by the processors in the run context.

- online rotation matrices go into the weight files next to their linear, without a description tag (what
  the format does for `heads_rotation` / `kronecker_rotation_m/_n`), and are listed in `metadata.quarot`;
- the global rotation goes to `optional/quarot.safetensors`, referenced from `optional.quarot.rotation_map`;
- an LM head untied from the embeddings makes the saved config.json say `tie_word_embeddings: false`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from modelslim_core.io.safetensors_stream import ShardedSafetensorsWriter
from modelslim_core.rotation import export
from modelslim_save_ascend.description import Description
from modelslim_save_ascend.output_dir import write_json_atomic


def write_online_rotations(state: dict[str, Any], writer: ShardedSafetensorsWriter) -> None:
    """Before the weights writer closes."""
    record = export.recorded(state)
    if record is not None:
        for name, tensor in export.online_tensors(record).items():
            writer.write(name, tensor)


def commit_rotation_extras(state: dict[str, Any], save_path: Path, description: Description) -> None:
    """After the side files are copied (config.json is ours to edit then), before the description is written."""
    record = export.recorded(state)
    if record is None:
        return
    description.metadata.update(export.description_metadata(record))
    description.optional.update(export.write_optional(record, save_path))
    mark_untied_in_config(state, save_path)


def mark_untied_in_config(state: dict[str, Any], save_path: Path) -> None:
    """An LM head untied by the rotation must stay untied when an engine loads the copied config.json."""
    record = export.recorded(state)
    config_file = Path(save_path) / "config.json"
    if record is not None and record["untied"] and config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        for holder in (config, config.get("text_config")):
            if isinstance(holder, dict):
                holder["tie_word_embeddings"] = False
        write_json_atomic(config_file, config, indent=2)
