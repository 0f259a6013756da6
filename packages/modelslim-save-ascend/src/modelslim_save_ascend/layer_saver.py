"""What the Ascend savers share: stream every unit's tensors as soon as it is finished, tag each tensor.

A unit's float parameters are written in the source model's dtype and tagged FLOAT; a quantized linear
contributes the tensors of its export tag (linear_export.py). The formats differ only in file names,
the `deq_scale` dtype, the types they can represent and what they write when they commit, so subclasses
supply those and `finish`.
"""

from __future__ import annotations

import itertools
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
from pydantic import Field
from torch import nn

from modelslim_core.errors import SaveError
from modelslim_core.io.permissions import make_dir
from modelslim_core.io.safetensors_stream import ShardedSafetensorsWriter
from modelslim_core.models.fused_tensors import FusedTensorBuffer
from modelslim_core.quant.quantized_linear import QuantizedLinear
from modelslim_core.runtime.exports import exports_of
from modelslim_core.runtime.saver import Saver, SaverConfig
from modelslim_core.runtime.unit import Unit
from modelslim_save_ascend.description import Description
from modelslim_save_ascend.linear_export import EXPORTERS, ExportDtypes
from modelslim_save_ascend.output_dir import clear_previous_output

logger = logging.getLogger(__name__)


class ShardedSaverConfig(SaverConfig):
    """`part_file_size` (GiB per shard, fractions allowed; 0 = one file) and the reference's unread `ext`."""

    part_file_size: float = Field(default=4, ge=0, description="shard size in GiB (fractions allowed); 0 writes one file")
    ext: dict = Field(default_factory=dict)


class LayerTreeSaver(Saver, ABC):
    """Base of the Ascend savers: writes units as they finish, then everything outside them."""

    config: ShardedSaverConfig
    writes_release_layout = True
    #: File name prefix of the weights (`<prefix>.safetensors`, `<prefix>-0000i-of-0000N.safetensors`).
    weights_prefix: ClassVar[str]
    #: Glob matching this format's description files, removed before a run so stale output never looks complete.
    description_pattern: ClassVar[str]
    #: How to go on when a layer's type cannot be written.
    unsupported_hint: ClassVar[str]

    def __init__(self, config: ShardedSaverConfig, context):
        super().__init__(config, context)
        self.save_path = context.save_path
        self.dtypes = self.export_dtypes(context.adapter.source_dtype)
        self.description = Description()
        self.writer: ShardedSafetensorsWriter | None = None
        # Checkpoint names can differ from module paths (VLM releases); adapters without the hook keep paths.
        self._saved_name = getattr(context.adapter, "saved_tensor_name", None) or (lambda name: name)
        # Float tensors the release stores fused (Kimi-K2.5's vision `wqkv`, models/fused_tensors.py).
        self._fused_part = getattr(context.adapter, "fused_checkpoint_part", None) or (lambda name: None)
        self._fusions = FusedTensorBuffer()

    @abstractmethod
    def export_dtypes(self, source: torch.dtype | None) -> ExportDtypes:
        """The dtypes this format writes for a model whose checkpoint is in `source`."""

    @property
    def sharded(self) -> bool:
        return self.config.part_file_size > 0

    def pre_run(self, model: nn.Module) -> None:
        make_dir(self.save_path)
        clear_previous_output(self.save_path, self.weights_prefix, self.description_pattern)
        self.writer = ShardedSafetensorsWriter(self.save_path, self.weights_prefix, 0, limit_bytes=self._limit_bytes)

    @property
    def _limit_bytes(self) -> int | None:
        size = self.config.part_file_size
        return max(1, int(size * 2**30)) if size > 0 else None

    # --- writing ------------------------------------------------------------------------------------------
    def _write(self, name: str, tensor: torch.Tensor, tag: str) -> None:
        part = self._fused_part(name)
        if part is not None:
            self._write_part(name, part, tensor, tag)
            return
        name = self._saved_name(name)
        self.writer.write(name, tensor)
        self.description.tag(name, tag)

    def _write_part(self, name: str, part, tensor: torch.Tensor, tag: str) -> None:
        if tag != "FLOAT":
            raise SaveError(
                f"{name} is tagged {tag}, but the release stores it fused into {part.target}, which can only be "
                "written float.",
                "keep this layer float (exclude it from the config's quantizing items).",
            )
        fused = self._fusions.add(part, tensor)
        if fused is not None:
            self.writer.write(part.target, fused.contiguous())
            self.description.tag(part.target, "FLOAT")

    def _write_float_params(self, prefix: str, module: nn.Module) -> None:
        for pname, param in module.named_parameters(recurse=False):
            full = f"{prefix}.{pname}" if prefix else pname
            if param.is_meta and self._write_from_source(full, param.dtype):
                continue
            value = self.context.weights.read(full) if param.is_meta else param.detach()  # lazy runs: from the source
            if self.dtypes.source is not None and value.is_floating_point():
                value = value.to(self.dtypes.source)
            self._write(full, value, "FLOAT")
        if isinstance(module, nn.Linear):
            self.description.propose("FLOAT")

    def _write_from_source(self, name: str, dtype: torch.dtype) -> bool:
        """Copy a large float tensor the run never loaded (embeddings, lm_head) from the source checkpoint a
        block of rows at a time; False when it is small enough to read whole."""
        target = self.dtypes.source if self.dtypes.source is not None and dtype.is_floating_point else None
        streamed = self.context.weights.row_blocks(name, target)
        if streamed is None:
            return False
        shape, blocks = streamed
        saved = self._saved_name(name)
        first = next(blocks)
        self.writer.write_blocks(saved, first.dtype, shape, itertools.chain([first], blocks))
        self.description.tag(saved, "FLOAT")
        return True

    def _write_quantized(self, prefix: str, layer: QuantizedLinear) -> None:
        exporter = EXPORTERS.get(layer.export_type)
        if exporter is None or (self.writes is not None and layer.export_type not in self.writes):
            writable = sorted(self.writes) if self.writes is not None else sorted(EXPORTERS)
            raise SaveError(
                f"{prefix} is quantized as {layer.export_type}, which {self.config.type} cannot write "
                f"(it writes {', '.join(writable)}).",
                self.unsupported_hint,
            )
        self._record_group_size(prefix, layer)
        for suffix, tensor, tag in exporter(prefix, layer, self.dtypes):
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

    def _write_tree(self, prefix: str, root: nn.Module, skip_prefixes: tuple[str, ...] = (),
                    covers: Callable[[str], bool] | None = None) -> None:
        for path, module in root.named_modules():
            name = ".".join(part for part in (prefix, path) if part)
            if any(name == p or name.startswith(p + ".") for p in skip_prefixes):
                continue
            if covers is not None and not covers(path):
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
            self._write_attached(name, module)

    def _write_attached(self, prefix: str, module: nn.Module) -> None:
        """Tensors, entries and global keys processors attached to the module (runtime/exports.py)."""
        for exports in exports_of(module):
            if self.writes is not None:
                refused = sorted({tag for _, _, tag in exports.tensors} - self.writes)
                if refused:
                    raise SaveError(f"{prefix} carries {', '.join(refused)} tensors, which {self.config.type} cannot write.",
                                    self.unsupported_hint)
            for suffix, tensor, tag in exports.tensors:
                self._write(f"{prefix}.{suffix}", tensor.detach().contiguous(), tag)
            for suffix, value in exports.entries.items():
                self.description.tag(self._saved_name(f"{prefix}.{suffix}"), value)
            self.description.globals.update(exports.globals)

    def save_unit(self, unit: Unit) -> None:
        """A whole unit, or one piece of it (pieces come in module order, so the checkpoint is the same)."""
        self._write_tree(unit.name, unit.module, covers=None if unit.whole else unit.covers)

    def save_remaining(self, model: nn.Module, unit_names: list[str]) -> None:
        self._write_tree("", model, skip_prefixes=tuple(unit_names))
        self._carry_source_tensors()
        pending = self._fusions.pending()
        if pending:
            raise SaveError(f"{pending[0]} (and {len(pending) - 1} more) is stored fused, but not all of its parts "
                            "were saved.", "this is an adapter bug; please report it with the model's config.json.")

    def _carry_source_tensors(self) -> None:
        """Copy source tensors the model does not hold but the engine loads (MTP layers, models/mtp.py) as FLOAT,
        under their checkpoint names, a block of rows at a time when large."""
        carried = getattr(self.context.adapter, "carried_source_tensors", None)
        names = carried() if carried is not None else []
        if not names:
            return
        from modelslim_core.models.weights import LazyWeights, SourceWeights

        dtype = self.dtypes.source or torch.bfloat16
        source = LazyWeights(SourceWeights(self.context.adapter.checkpoint_dir), {}, dtype)
        for name in names:
            streamed = source.row_blocks(name, dtype)
            if streamed is None:
                value = source.read(name)
                self.writer.write(name, value.to(dtype) if value.is_floating_point() else value)
            else:
                shape, blocks = streamed
                first = next(blocks)
                self.writer.write_blocks(name, first.dtype, shape, itertools.chain([first], blocks))
            self.description.tag(name, "FLOAT")
        self.description.metadata["carried_float"] = self.context.adapter.carried_source_prefixes()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()

    def state_dict(self) -> dict:
        return {"writer": self.writer.snapshot(), "description": self.description.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.writer = ShardedSafetensorsWriter.resume(self.save_path, self.weights_prefix, 0, state["writer"],
                                                      limit_bytes=self._limit_bytes)
        self.description.load_state_dict(state["description"])
