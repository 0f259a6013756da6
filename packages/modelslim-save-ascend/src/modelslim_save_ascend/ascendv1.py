"""`ascendv1_saver`: the checkpoint layout vLLM-Ascend and MindIE load (docs/formats.md).

Output: `quant_model_weights.safetensors` (or `-0000i-of-0000N` shards plus an index when part_file_size
> 0), the model's side files, config.json without `quantization_config`, and — written last, atomically —
`quant_model_description.json`, whose presence marks a complete checkpoint.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import Field

from modelslim_core.formats.tags import ASCENDV1, TAGS
from modelslim_save_ascend.layer_saver import LayerTreeSaver, ShardedSaverConfig
from modelslim_save_ascend.linear_export import ExportDtypes
from modelslim_save_ascend.output_dir import copy_side_files, strip_quantization_config, write_json_atomic
from modelslim_save_ascend.rotation_extras import commit_rotation_extras, write_online_rotations

logger = logging.getLogger(__name__)

WEIGHTS_PREFIX = "quant_model_weights"
DESCRIPTION_NAME = "quant_model_description.json"


#: Tags whose `deq_scale` layout depends on the serving dtype (float32 for bf16, the int64 bit pattern for fp16).
DEQ_SCALE_TAGS = frozenset(fmt.tag for fmt in TAGS if fmt.deq_scale)


class AscendV1SaverConfig(ShardedSaverConfig):
    type: Literal["ascendv1_saver"] = "ascendv1_saver"
    serving_dtype: Literal["auto", "bfloat16", "float16"] = Field(
        default="auto", description="dtype the engine will serve in (deq_scale layout); auto: bfloat16 for bf16 "
                                    "models, float16 otherwise")


class AscendV1Saver(LayerTreeSaver):
    config_class = AscendV1SaverConfig
    config: AscendV1SaverConfig
    #: Quantized linear tags, plus the attention tags processors attach (KV cache C8, FA3 FAQuant) and QuaRot extras.
    writes = TAGS.written_by(ASCENDV1)
    weights_prefix = WEIGHTS_PREFIX
    description_pattern = DESCRIPTION_NAME
    unsupported_hint = "choose a qconfig whose type ascendv1_saver writes (see README.md 'YAML protocol')."

    @property
    def serving_dtype(self) -> str:
        """What the engine must serve in for deq_scale to be read right: the config's choice, else from the model."""
        if self.config.serving_dtype != "auto":
            return self.config.serving_dtype
        return "bfloat16" if self.context.adapter.source_dtype == torch.bfloat16 else "float16"

    def export_dtypes(self, source: torch.dtype | None) -> ExportDtypes:
        """deq_scale is float32 for bf16 serving, the int64 bit pattern for fp16 serving (what the kernels read)."""
        return ExportDtypes(source=source, deq_scale_float32=self.serving_dtype == "bfloat16")

    def finish(self) -> None:
        write_online_rotations(self.context.state, self.writer)
        self.writer.close()
        copied = copy_side_files(self.context.model_path, self.save_path, skip={DESCRIPTION_NAME})
        strip_quantization_config(self.save_path / "config.json")
        commit_rotation_extras(self.context.state, self.save_path, self.description)
        self.description.metadata["serving_dtype"] = self.serving_dtype
        write_json_atomic(self.save_path / DESCRIPTION_NAME, self.description.to_json(), indent=4)
        logger.info(
            "Saved %d tensors (%s) and %d side files to %s.",
            len(self.description.tags),
            self.description.model_quant_type,
            len(copied),
            self.save_path,
        )
        self._warn_serving_dtype()

    def _warn_serving_dtype(self) -> None:
        if not DEQ_SCALE_TAGS & set(self.description.tags.values()):
            return
        other = "float16" if self.serving_dtype == "bfloat16" else "bfloat16"
        logger.warning(
            "%s holds static W8A8 layers whose deq_scale is laid out for serving in %s (recorded as "
            "metadata.serving_dtype in quant_model_description.json). Serving it in %s reads deq_scale wrongly: "
            "re-export with `serving_dtype: %s` in the ascendv1_saver item.",
            self.save_path, self.serving_dtype, other, other)
