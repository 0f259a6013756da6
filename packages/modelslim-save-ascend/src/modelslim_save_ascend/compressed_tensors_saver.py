"""`compressed_tensors_saver`: a Hugging Face checkpoint in the compressed-tensors format.

vLLM (CUDA) and vLLM-Ascend load it through `quantization_config.quant_method: compressed-tensors`, and
transformers decompresses it (with the compressed-tensors package installed). Output: `model.safetensors`
(or `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json` when part_file_size > 0), the
model's side files, and — written last, atomically, so its presence marks a complete checkpoint —
`config.json` with `quantization_config` (`config_groups` per scheme, `ignore` for linears left float,
`format` int-quantized / pack-quantized / float-quantized, or mixed-precision when they differ). Per-layer
tensors: ct_layout.py.
"""

from __future__ import annotations

import json
import logging
from typing import Literal

import torch
from torch import nn

from modelslim_core.errors import SaveError
from modelslim_core.io.atomic import write_json_file_atomic
from modelslim_core.quant.quantized_linear import QuantizedLinear
from modelslim_save_ascend.ct_layout import CT_WRITES, MIXED_PRECISION, CTScheme, ct_linear
from modelslim_save_ascend.layer_saver import LayerTreeSaver, ShardedSaverConfig
from modelslim_save_ascend.linear_export import ExportDtypes
from modelslim_save_ascend.output_dir import copy_side_files

logger = logging.getLogger(__name__)

WEIGHTS_PREFIX = "model"
CONFIG_NAME = "config.json"
#: Scales are kept in float32: the loader casts them to its parameter dtype, never the other way round.
SCALE_DTYPE = torch.float32


class CompressedTensorsSaverConfig(ShardedSaverConfig):
    type: Literal["compressed_tensors_saver"] = "compressed_tensors_saver"


class CompressedTensorsSaver(LayerTreeSaver):
    config_class = CompressedTensorsSaverConfig
    config: CompressedTensorsSaverConfig
    writes = CT_WRITES
    weights_prefix = WEIGHTS_PREFIX
    description_pattern = CONFIG_NAME  # config.json carries quantization_config: removed first, written last
    unsupported_hint = (
        "compressed-tensors expresses W8A8 (static), W8A8_DYNAMIC, W8A16, W4A16, W4A8_DYNAMIC (per channel or "
        "per group) and W8A8FP8_DYNAMIC; "
        "use ascendv1_saver for the other types, or change the qconfig."
    )

    def __init__(self, config: CompressedTensorsSaverConfig, context):
        super().__init__(config, context)
        self.groups: dict[CTScheme, list[str]] = {}
        self.float_linears: list[str] = []

    def export_dtypes(self, source: torch.dtype | None) -> ExportDtypes:
        return ExportDtypes(source=source, deq_scale_float32=True)  # no deq_scale in this format

    def _write_float_params(self, prefix: str, module: nn.Module) -> None:
        super()._write_float_params(prefix, module)
        if isinstance(module, nn.Linear):
            self.float_linears.append(prefix)

    def _write_quantized(self, prefix: str, layer: QuantizedLinear) -> None:
        if layer.export_type not in CT_WRITES:
            raise self._unsupported(prefix, layer)
        scheme, tensors = ct_linear(layer, SCALE_DTYPE)
        for suffix, tensor in tensors.items():
            self._write(f"{prefix}.{suffix}", tensor, layer.export_type)
        if layer.bias is not None:
            self._write(f"{prefix}.bias", layer.bias.to(self.dtypes.source or layer.bias.dtype), "FLOAT")
        self.groups.setdefault(scheme, []).append(prefix)

    def _unsupported(self, prefix: str, layer: QuantizedLinear) -> SaveError:
        return SaveError(f"{prefix} is quantized as {layer.export_type}, which compressed_tensors_saver cannot write.",
                         self.unsupported_hint)

    def quantization_config(self) -> dict:
        single = len(self.groups) == 1
        config_groups = {
            f"group_{i}": scheme.to_json(["Linear"] if single else sorted(names))
            for i, (scheme, names) in enumerate(self.groups.items())
        }
        formats = {scheme.format for scheme in self.groups}
        return {
            "quant_method": "compressed-tensors",
            "format": formats.pop() if len(formats) == 1 else MIXED_PRECISION,
            "quantization_status": "compressed",
            "config_groups": config_groups,
            "ignore": sorted(self.float_linears),
            "kv_cache_scheme": None,
            "global_compression_ratio": None,
        }

    def finish(self) -> None:
        self.writer.close()
        copied = copy_side_files(self.context.model_path, self.save_path, skip={CONFIG_NAME, "quant_model_description.json"})
        config = json.loads((self.context.model_path / CONFIG_NAME).read_text(encoding="utf-8"))
        if isinstance(config.get("text_config"), dict):
            config["text_config"].pop("quantization_config", None)
        config["quantization_config"] = self.quantization_config()
        write_json_file_atomic(self.save_path / CONFIG_NAME, config, indent=2)
        logger.info("Saved %d compressed-tensors config groups, %d float linears and %d side files to %s.",
                    len(self.groups), len(self.float_linears), len(copied), self.save_path)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["ct_groups"] = [[scheme.format, [list(kv) for kv in scheme.weights],
                               None if scheme.input_activations is None else [list(kv) for kv in scheme.input_activations],
                               names] for scheme, names in self.groups.items()]
        state["ct_float_linears"] = self.float_linears
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.groups = {
            CTScheme(fmt, tuple(tuple(kv) for kv in weights), None if act is None else tuple(tuple(kv) for kv in act)): names
            for fmt, weights, act, names in state["ct_groups"]
        }
        self.float_linears = state["ct_float_linears"]
