"""Reading the source checkpoint's tensors on demand, so a layer-wise run never holds the whole model.

The model skeleton is built with every parameter on the `meta` device (no memory); a unit's parameters are
read from the model's own safetensors files (single file or sharded index) when the unit is processed and
dropped again once it is saved. Checkpoints published quantized (FP8 blocks, packed INT4) are dequantized
tensor by tensor as they are read (io/source_dequant.py), so both loading paths see float weights under the
model's own names.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from modelslim_core.errors import ModelError
from modelslim_core.io.source_dequant import DequantizingReader, read_source_quantization

INDEX_NAME = "model.safetensors.index.json"


class SourceWeights:
    """Name -> tensor access to a Hugging Face safetensors checkpoint, quantized linears read as float."""

    def __init__(self, model_path: Path):
        self.model_path = Path(model_path)
        self._file_of = self._map_files()
        self._headers: dict[Path, dict[str, tuple[str, tuple[int, ...]]]] = {}
        self._reader = DequantizingReader(self._file_of, self._read_file_tensor, self._file_tensor_shape,
                                          read_source_quantization(self.model_path))

    def _map_files(self) -> dict[str, Path]:
        index = self.model_path / INDEX_NAME
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            return {name: self.model_path / file for name, file in weight_map.items()}
        mapping: dict[str, Path] = {}
        for file in sorted(self.model_path.glob("*.safetensors")):
            with safe_open(file, framework="pt") as handle:
                mapping.update({name: file for name in handle.keys()})
        return mapping

    @property
    def available(self) -> bool:
        return bool(self._file_of)

    @property
    def quantized(self) -> bool:
        """Whether the checkpoint stores some linears quantized (FP8 blocks, packed integers)."""
        return self._reader.quantized

    def names(self) -> list[str]:
        """Every tensor name of the checkpoint, as the model names it (a quantized linear as `<linear>.weight`)."""
        return self._reader.names()

    def __contains__(self, name: str) -> bool:
        return name in self._reader

    def read(self, name: str) -> torch.Tensor:
        if name not in self._reader:
            raise ModelError(f"tensor {name} is not in the checkpoint files of {str(self.model_path)!r}.",
                             "the checkpoint does not match config.json; check the model directory.")
        return self._reader.read(name)

    def _read_file_tensor(self, name: str) -> torch.Tensor:
        """The tensor as safetensors maps it (no copy: its pages come in as they are used). The file is opened
        per read on purpose: pages touched through a handle that stays open stay resident until it closes (a
        29568x8192 bf16 linear read through one open handle left its 462 MiB in RSS after the tensor was
        dropped), memory the budget cannot see; a tensor read per open releases its pages with the tensor.
        An open costs 0.1-0.6 ms (measured on 72B and DeepSeek-V3 shards), against ~0.1 s to quantize a linear."""
        with safe_open(self._file_of[name], framework="pt") as handle:
            return handle.get_tensor(name)

    def is_file_tensor(self, name: str) -> bool:
        """Whether `name` is stored as it is in a file (not dequantized from other tensors)."""
        return name in self._file_of and not self.quantized

    def read_rows(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) of a file tensor (its first dimension), read without loading the rest."""
        with safe_open(self._file_of[name], framework="pt") as handle:
            return handle.get_slice(name)[start:stop]

    def stored_format(self, name: str) -> str:
        """How `name` is stored in the files: "fp8_block", "packed" or "plain" (io/source_dequant.py)."""
        return self._reader.stored_format(name)

    def _file_tensor_shape(self, name: str) -> tuple[int, ...]:
        return self._header(self._file_of[name])[name][1]

    def _header(self, file: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
        """name -> (safetensors dtype, shape) of every tensor in `file`, read once: opening a multi-GB shard per
        tensor costs milliseconds, which a 90k-tensor checkpoint pays minutes for."""
        if file not in self._headers:
            with safe_open(file, framework="pt") as handle:
                self._headers[file] = {key: (piece.get_dtype(), tuple(piece.get_shape()))
                                       for key in handle.keys() for piece in (handle.get_slice(key),)}
        return self._headers[file]

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape without reading it (a quantized linear's float shape)."""
        return self._reader.shape(name)

    def nbytes(self, names: list[str]) -> int:
        """Bytes the named tensors take once read (without reading them): on disk, or dequantized."""
        total = 0
        for name in names:
            if self._reader.is_dequantized(name):
                total += math.prod(self.shape(name)) * self._reader.dtype.itemsize
                continue
            dtype, shape = self._header(self._file_of[name])[name]
            total += math.prod(shape) * _ELEMENT_BYTES.get(dtype, 4)
        return total


_ELEMENT_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                  "F8_E4M3": 1, "F8_E5M2": 1}


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Create modules with their parameters on `meta` (buffers such as rotary tables stay real)."""
    original = nn.Module.register_parameter

    def register(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = register
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def tied_aliases(model: nn.Module) -> dict[str, list[str]]:
    """Every parameter name -> all names sharing that parameter (tied embeddings store only one of them)."""
    groups: dict[int, list[str]] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(param), []).append(name)
    return {name: names for names in groups.values() for name in names}


class LazyWeights:
    """Materialises and releases parts of a meta-device skeleton from the source checkpoint."""

    def __init__(self, source: SourceWeights, aliases: dict[str, list[str]], dtype: torch.dtype,
                 checkpoint_name: Callable[[str], str] | None = None):
        from modelslim_core.models.fused_expert_weights import FusedExpertTensors

        self.source = source
        self.aliases = aliases
        self.dtype = dtype
        #: Module-path name -> the checkpoint's name, for families transformers renames on load.
        self.checkpoint_name = checkpoint_name
        #: Tensors the checkpoint holds only inside others (per-expert weights of fused MoE checkpoints).
        self.derived = [FusedExpertTensors(source)]

    def _candidates(self, name: str) -> list[str]:
        names = self.aliases.get(name, [name])
        return names + [self.checkpoint_name(n) for n in names] if self.checkpoint_name else names

    def key_for(self, name: str) -> str:
        """The checkpoint key holding parameter `name` (itself, a tied alias, or their checkpoint names)."""
        for candidate in self._candidates(name):
            if candidate in self.source:
                return candidate
        raise ModelError(f"parameter {name} is not in the checkpoint files of {str(self.source.model_path)!r}.",
                         "the checkpoint does not match config.json; check the model directory.")

    def missing(self, names: list[str]) -> list[str]:
        return [n for n in names if not any(c in self.source for c in self._candidates(n))
                and not any(d.provides(n) for d in self.derived)]

    def read(self, name: str) -> torch.Tensor:
        if not any(c in self.source for c in self._candidates(name)):
            for derived in self.derived:
                if derived.provides(name):
                    return derived.read(name)
        return self.source.read(self.key_for(name))

    def row_blocks(self, name: str, dtype: torch.dtype | None) -> tuple[list[int], Iterator[torch.Tensor]] | None:
        """(shape, row blocks in `dtype`) of a checkpoint tensor too large to read whole; None for one that is
        small, 0-dim, or only derived from another tensor (read those whole)."""
        from modelslim_core.quant.row_blocks import BLOCK_BYTES, row_blocks

        if not any(c in self.source for c in self.aliases.get(name, [name])):
            return None
        key = self.key_for(name)
        if not self.source.is_file_tensor(key):
            return None
        shape = list(self.source.shape(key))
        if len(shape) < 1 or self.source.nbytes([key]) <= BLOCK_BYTES:
            return None
        columns = max(1, self.source.nbytes([key]) // shape[0] // 4)  # float32-equivalent width of one row

        def blocks() -> Iterator[torch.Tensor]:
            for start, stop in row_blocks(shape[0], columns):
                block = self.source.read_rows(key, start, stop)
                yield block.to(dtype) if dtype is not None and block.is_floating_point() else block

        return shape, blocks()

    def materialize(self, root: nn.Module, prefix: str = "", names: list[str] | None = None,
                    dtype: torch.dtype | None = None, device: torch.device | str = "cpu") -> None:
        """Read the meta parameters of `root` (or just `names`, relative to root) from the checkpoint, as float
        `dtype` (default: this loader's) on `device`."""
        for name in names if names is not None else [n for n, _ in root.named_parameters(remove_duplicate=False)]:
            param = root.get_parameter(name)
            if param.is_meta:
                value = self.read(f"{prefix}.{name}" if prefix else name)
                target = (dtype or self.dtype) if value.is_floating_point() else value.dtype
                _set_param(root, name, nn.Parameter(value.to(device=device, dtype=target), requires_grad=False))

    @staticmethod
    def release(root: nn.Module, names: list[str]) -> None:
        """Put the named parameters back on `meta`, freeing their memory."""
        for name in names:
            _set_param(root, name, nn.Parameter(root.get_parameter(name).detach().to("meta"), requires_grad=False))


def _set_param(root: nn.Module, name: str, value: nn.Parameter) -> None:
    owner_name, _, attr = name.rpartition(".")
    owner = root.get_submodule(owner_name) if owner_name else root
    owner._parameters[attr] = value
