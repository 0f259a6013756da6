"""`ascendv1_saver`: the checkpoint layout vLLM-Ascend and MindIE load (shared/spec/format-and-runners.md §1).

Output: `quant_model_weights.safetensors` (or `-0000i-of-0000N` shards plus an index when part_file_size
> 0), the model's side files, config.json without `quantization_config`, and — written last, atomically —
`quant_model_description.json`, whose presence marks a complete checkpoint.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from modelslim_core.errors import SaveError
from modelslim_core.io.safetensors_stream import ShardedSafetensorsWriter
from modelslim_core.quant.quantized_linear import QuantizedLinear
from modelslim_core.runtime.saver import Saver, SaverConfig
from modelslim_core.runtime.unit import Unit
from modelslim_save_ascend.description import Description
from modelslim_save_ascend.linear_export import EXPORTERS
from modelslim_save_ascend.output_dir import (
    clear_previous_output,
    copy_side_files,
    strip_quantization_config,
    write_json_atomic,
)

logger = logging.getLogger(__name__)

WEIGHTS_PREFIX = "quant_model_weights"
DESCRIPTION_NAME = "quant_model_description.json"


class AscendV1SaverConfig(SaverConfig):
    type: Literal["ascendv1_saver"] = "ascendv1_saver"
    part_file_size: float = Field(default=4, ge=0, description="shard size in GiB (fractions allowed); 0 writes one file")
    ext: dict = Field(default_factory=dict)


class AscendV1Saver(Saver):
    config_class = AscendV1SaverConfig
    config: AscendV1SaverConfig

    def __init__(self, config: AscendV1SaverConfig, context):
        super().__init__(config, context)
        self.save_path = context.save_path
        self.source_dtype = context.adapter.source_dtype
        self.description = Description()
        self.writer: ShardedSafetensorsWriter | None = None

    def pre_run(self, model: nn.Module) -> None:
        self.save_path.mkdir(parents=True, exist_ok=True)
        clear_previous_output(self.save_path, WEIGHTS_PREFIX, DESCRIPTION_NAME)
        size = self.config.part_file_size
        limit = max(1, int(size * 2**30)) if size > 0 else None
        self.writer = ShardedSafetensorsWriter(self.save_path, WEIGHTS_PREFIX, 0, limit_bytes=limit)

    # --- writing ------------------------------------------------------------------------------------------
    def _write(self, name: str, tensor: torch.Tensor, tag: str) -> None:
        self.writer.write(name, tensor)
        self.description.tag(name, tag)

    def _write_float_params(self, prefix: str, module: nn.Module) -> None:
        for pname, param in module.named_parameters(recurse=False):
            value = param.detach()
            if self.source_dtype is not None and value.is_floating_point():
                value = value.to(self.source_dtype)
            self._write(f"{prefix}.{pname}" if prefix else pname, value, "FLOAT")
        if isinstance(module, nn.Linear):
            self.description.propose("FLOAT")

    def _write_quantized(self, prefix: str, layer: QuantizedLinear) -> None:
        exporter = EXPORTERS.get(layer.export_type)
        if exporter is None:
            raise SaveError(
                f"{prefix} is quantized as {layer.export_type}, which ascendv1_saver cannot write.",
                f"ascendv1_saver writes: {', '.join(EXPORTERS)}.",
            )
        self._record_group_size(prefix, layer)
        for suffix, tensor, tag in exporter(prefix, layer, self.source_dtype):
            self._write(f"{prefix}.{suffix}", tensor, tag)
        self.description.propose(layer.export_type)

    def _record_group_size(self, prefix: str, layer: QuantizedLinear) -> None:
        """The format has ONE global group_size (MX layers count as 32). The reference lets the last layer win,
        which leaves every layer with another group size unreadable; a second, different size is refused."""
        current = self.description.group_size
        if layer.group_size and current and layer.group_size != current:
            raise SaveError(
                f"{prefix} ({layer.export_type}) has group size {layer.group_size}, but an earlier layer of this "
                f"checkpoint has {current}; quant_model_description.json holds a single group_size, so serving "
                "engines would read one of them wrongly.",
                "use one ext.group_size for every per_group linear_quant (MX types always use 32).",
            )
        if layer.group_size:
            self.description.group_size = layer.group_size

    def _write_tree(self, prefix: str, root: nn.Module, skip_prefixes: tuple[str, ...] = ()) -> None:
        for path, module in root.named_modules():
            name = ".".join(part for part in (prefix, path) if part)
            if any(name == p or name.startswith(p + ".") for p in skip_prefixes):
                continue
            if isinstance(module, QuantizedLinear):
                self._write_quantized(name, module)
            elif getattr(module, "replaces_linear", False):
                raise SaveError(
                    f"{name} is still being calibrated ({type(module).__name__}) when it is saved.",
                    "this is a processor bug; please report it with MSMODELSLIM_LOG_LEVEL=debug output.",
                )
            else:
                self._write_float_params(name, module)

    def save_unit(self, unit: Unit) -> None:
        self._write_tree(unit.name, unit.module)

    def save_remaining(self, model: nn.Module, unit_names: list[str]) -> None:
        self._write_tree("", model, skip_prefixes=tuple(unit_names))

    # --- committing ---------------------------------------------------------------------------------------
    def finish(self) -> None:
        self.writer.close()
        copied = copy_side_files(self.context.model_path, self.save_path, skip={DESCRIPTION_NAME})
        strip_quantization_config(self.save_path / "config.json")
        write_json_atomic(self.save_path / DESCRIPTION_NAME, self.description.to_json(), indent=4)
        logger.info(
            "Saved %d tensors (%s) and %d side files to %s.",
            len(self.description.tags),
            self.description.model_quant_type,
            len(copied),
            self.save_path,
        )

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()

