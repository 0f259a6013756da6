"""`ascendv1_saver`: the checkpoint layout vLLM-Ascend and MindIE load (docs/formats.md).

Output: `quant_model_weights.safetensors` (or `-0000i-of-0000N` shards plus an index when part_file_size
> 0), the model's side files, config.json without `quantization_config`, and — written last, atomically —
`quant_model_description.json`, whose presence marks a complete checkpoint.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch

from modelslim_core.rotation.export import ROTATION_EXTRAS
from modelslim_save_ascend.layer_saver import LayerTreeSaver, ShardedSaverConfig
from modelslim_save_ascend.linear_export import EXPORTERS, ExportDtypes
from modelslim_save_ascend.output_dir import copy_side_files, strip_quantization_config, write_json_atomic
from modelslim_save_ascend.rotation_extras import commit_rotation_extras, write_online_rotations

logger = logging.getLogger(__name__)

WEIGHTS_PREFIX = "quant_model_weights"
DESCRIPTION_NAME = "quant_model_description.json"


class AscendV1SaverConfig(ShardedSaverConfig):
    type: Literal["ascendv1_saver"] = "ascendv1_saver"


class AscendV1Saver(LayerTreeSaver):
    config_class = AscendV1SaverConfig
    config: AscendV1SaverConfig
    #: Quantized linear tags, plus the attention tags processors attach (KV cache C8, FA3 FAQuant) and QuaRot extras.
    writes = frozenset(EXPORTERS) | {"C8", "FAQuant", ROTATION_EXTRAS}
    weights_prefix = WEIGHTS_PREFIX
    description_pattern = DESCRIPTION_NAME
    unsupported_hint = "choose a qconfig whose type ascendv1_saver writes (see README.md 'YAML protocol')."

    def export_dtypes(self, source: torch.dtype | None) -> ExportDtypes:
        """deq_scale is float32 for bf16 models, the int64 bit pattern otherwise (what the kernels read)."""
        return ExportDtypes(source=source, deq_scale_float32=source == torch.bfloat16)

    def finish(self) -> None:
        write_online_rotations(self.context.state, self.writer)
        self.writer.close()
        copied = copy_side_files(self.context.model_path, self.save_path, skip={DESCRIPTION_NAME})
        strip_quantization_config(self.save_path / "config.json")
        commit_rotation_extras(self.context.state, self.save_path, self.description)
        write_json_atomic(self.save_path / DESCRIPTION_NAME, self.description.to_json(), indent=4)
        logger.info(
            "Saved %d tensors (%s) and %d side files to %s.",
            len(self.description.tags),
            self.description.model_quant_type,
            len(copied),
            self.save_path,
        )
