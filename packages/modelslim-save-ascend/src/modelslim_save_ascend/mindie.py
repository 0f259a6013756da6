"""`mindie_format_saver`: the layout MindIE-SD loads for diffusion transformers (docs/formats.md).

Output, for a model whose quantized layers make it `<type>` (e.g. W8A8_DYNAMIC):
- `part_file_size: 0`: `quant_model_weight_<type lower>.safetensors`; otherwise shards
  `quant_model_weight-0000i-of-0000N.safetensors` plus `quant_model_weight.safetensors.index.json`;
- `quant_model_description_<type lower>.json`: one tag per tensor, then `model_quant_type` (no version,
  group_size, metadata or optional keys), written last and atomically;
- the `*.json` / `*.py` files of the model directory and of the quantized component's folder (for a diffusers
  pipeline: model_index.json and the transformer's config.json); config.json is not edited.
Without any quantized layer the names carry no `_<type>` suffix. `deq_scale` is always float32.

`<type>` is the description's `model_quant_type` (the highest-ranked type of any layer, as in ascendv1), not
the type of whichever layer happened to be saved last, so a mixed model's file names do not depend on layer
order. Tensor names are the quantized network's own parameter names (for Wan2.1 through diffusers, the
transformer checkpoint's keys: `blocks.0.attn1.to_q.weight`, ...).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from modelslim_core.formats.tags import MINDIE, TAGS
from modelslim_save_ascend.layer_saver import LayerTreeSaver, ShardedSaverConfig
from modelslim_save_ascend.linear_export import ExportDtypes
from modelslim_save_ascend.output_dir import copy_side_files, write_json_atomic
from modelslim_save_ascend.rotation_extras import mark_untied_in_config

logger = logging.getLogger(__name__)

WEIGHTS_PREFIX = "quant_model_weight"
DESCRIPTION_STEM = "quant_model_description"
#: MindIE-SD copies only these side files.
SIDE_FILE_SUFFIXES = (".json", ".py")
#: Values of `model_quant_type` that mean no layer was quantized.
_UNQUANTIZED = ("Unknown", "FLOAT")


class MindieFormatSaverConfig(ShardedSaverConfig):
    type: Literal["mindie_format_saver"] = "mindie_format_saver"
    part_file_size: float = Field(default=0, ge=0, description="0 only: MindIE-SD opens one weight file")

    @field_validator("part_file_size")
    @classmethod
    def _one_file(cls, value: float) -> float:
        if value > 0:
            raise ValueError(
                f"must be 0 for mindie_format_saver (got {value}): MindIE-SD's quantize() opens only "
                "quant_model_weight_<type>.safetensors, so sharded weights cannot be loaded; remove part_file_size "
                "or set it to 0")
        return value


class MindieFormatSaver(LayerTreeSaver):
    config_class = MindieFormatSaverConfig
    config: MindieFormatSaverConfig
    writes = TAGS.written_by(MINDIE)
    writes_per_group = False  # the description has no group_size (the reference refuses per-group dynamic too)
    weights_prefix = WEIGHTS_PREFIX
    description_pattern = f"{DESCRIPTION_STEM}*.json"
    unsupported_hint = (
        "save this model with ascendv1_saver, which writes W8A16 too, "
        f"or quantize these layers as {', '.join(tag for tag in TAGS.tags('linear') if tag in TAGS.written_by(MINDIE))} "
        "for MindIE-SD."
    )

    def __init__(self, config: MindieFormatSaverConfig, context):
        super().__init__(config, context)
        self._renamed: Path | None = None

    def export_dtypes(self, source: torch.dtype | None) -> ExportDtypes:
        return ExportDtypes(source=source, deq_scale_float32=True)

    def _type_suffix(self) -> str:
        quant_type = self.description.model_quant_type
        return "" if quant_type in _UNQUANTIZED else f"_{quant_type.lower()}"

    def description_json(self) -> dict[str, Any]:
        return {**self.description.tags, "model_quant_type": self.description.model_quant_type}

    def finish(self) -> None:
        self.writer.close()
        suffix = self._type_suffix()
        if not self.sharded and suffix:
            single = self.save_path / f"{WEIGHTS_PREFIX}.safetensors"
            self._renamed = self.save_path / f"{WEIGHTS_PREFIX}{suffix}.safetensors"
            os.replace(single, self._renamed)
        description_name = f"{DESCRIPTION_STEM}{suffix}.json"
        copied: list[str] = []
        for source in dict.fromkeys((self.context.model_path, self.context.adapter.checkpoint_dir)):
            copied += copy_side_files(source, self.save_path, skip={description_name}, suffixes=SIDE_FILE_SUFFIXES)
        mark_untied_in_config(self.context.state, self.save_path)
        write_json_atomic(self.save_path / description_name, self.description_json(), indent=4)
        logger.info(
            "Saved %d tensors (%s) and %d side files to %s in the MindIE-SD format.",
            len(self.description.tags),
            self.description.model_quant_type,
            len(copied),
            self.save_path,
        )

    def abort(self) -> None:
        super().abort()
        if self._renamed is not None:
            self._renamed.unlink(missing_ok=True)
