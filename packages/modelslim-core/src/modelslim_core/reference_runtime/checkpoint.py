"""Reading a saved ascendv1 checkpoint: its description, and its tensors wherever they are sharded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from modelslim_core.errors import CheckpointError
from modelslim_core.reference_runtime.rotations import declared_rotation_tensors

DESCRIPTION = "quant_model_description.json"
WEIGHTS_PREFIX = "quant_model_weights"
#: Description keys that describe the model, not a tensor.
GLOBAL_KEYS = frozenset(
    {"version", "model_quant_type", "metadata", "group_size", "optional", "kv_cache_type", "kv_quant_type", "fa_quant_type"}
)

#: Suffixes of description entries that describe a module, not a tensor (FA3's per-attention quant_type).
ENTRY_SUFFIXES = (".quant_type",)


def _read_description(path: Path) -> dict[str, Any]:
    file = path / DESCRIPTION
    if not file.is_file():
        raise CheckpointError(
            f"{str(path)!r} is not a quantized checkpoint: it has no {DESCRIPTION}.",
            "pass the --save_path of a finished `msmodelslim quant` run.",
        )
    try:
        description = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"{file} is not valid JSON: {exc}.", "re-run the quantization.") from None
    if not isinstance(description, dict):
        raise CheckpointError(f"{file} must hold a JSON object.", "re-run the quantization.")
    return description


def _weight_files(path: Path) -> list[Path]:
    files = sorted(path.glob(f"{WEIGHTS_PREFIX}*.safetensors"))
    if not files:
        raise CheckpointError(f"{str(path)!r} has a description but no {WEIGHTS_PREFIX}*.safetensors file.",
                              "the output is incomplete; re-run the quantization.")
    return files


class SavedCheckpoint:
    """The tags of a checkpoint's description and lazy access to its tensors."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.description = _read_description(self.path)
        described = {k: v for k, v in self.description.items() if k not in GLOBAL_KEYS and isinstance(v, str)}
        self.entries = {k: v for k, v in described.items() if k.endswith(ENTRY_SUFFIXES)}
        self.tags = {k: v for k, v in described.items() if k not in self.entries}
        self.rotation_tensors = {f"{linear}.{suffix}" for linear, suffixes in
                                 declared_rotation_tensors(self.description).items() for suffix in suffixes}
        self._file_of: dict[str, Path] = {}
        self._stored: dict[str, str] = {}  # module path -> saved name, where they differ (see rename)
        self._derived: dict[str, tuple[str, Any]] = {}  # split part -> (fused tensor, extract), see split
        # dtype and shape of every stored tensor, read from each file's header once: opening a file parses its
        # whole header, so one open per tensor costs O(tensors²) on a checkpoint of a thousand tensors
        self._meta: dict[str, tuple[torch.dtype, tuple[int, ...]]] = {}
        self._handles: dict[Path, Any] = {}  # open files while tensors are read (see `close`)
        for file in _weight_files(self.path):
            with safe_open(file, framework="pt") as handle:
                for name in handle.keys():
                    if name in self._file_of:
                        raise CheckpointError(f"tensor {name} is stored twice ({self._file_of[name].name}, {file.name}).",
                                              "remove stale shards from the checkpoint directory.")
                    self._file_of[name] = file
                    sliced = handle.get_slice(name)
                    self._meta[name] = _DTYPES[sliced.get_dtype()], tuple(sliced.get_shape())
        self._check_tags_cover_tensors()

    def _check_tags_cover_tensors(self) -> None:
        missing_rotations = sorted(self.rotation_tensors - set(self._file_of))
        if missing_rotations:
            raise CheckpointError(f"{missing_rotations[0]} is declared by metadata.quarot but missing from the weights.",
                                  "the weights are incomplete; re-run the quantization.")
        untagged = sorted(set(self._file_of) - set(self.tags) - self.rotation_tensors)
        if untagged:
            raise CheckpointError(f"tensor {untagged[0]} is saved but has no tag in {DESCRIPTION} ({len(untagged)} such tensors).",
                                  "the description and the weights come from different runs; re-run the quantization.")
        missing = sorted(set(self.tags) - set(self._file_of))
        if missing:
            raise CheckpointError(f"tensor {missing[0]} is described in {DESCRIPTION} but missing from the weights ({len(missing)} such tensors).",
                                  "the weights are incomplete; re-run the quantization.")

    def rename(self, to_module_name) -> None:
        """Address tensors by the model's module paths (`to_module_name` maps a saved name to one) from now on;
        error messages keep naming the saved tensors."""
        renamed = {to_module_name(name): name for name in self._file_of}
        if len(renamed) != len(self._file_of):
            raise CheckpointError(f"{self.path}: two saved tensors map to the same model parameter.",
                                  "the checkpoint mixes naming schemes; re-run the quantization.")
        self._stored = {new: old for new, old in renamed.items() if new != old}
        self._file_of = {new: self._file_of[old] for new, old in renamed.items()}
        self._meta = {new: self._meta[old] for new, old in renamed.items()}
        self.tags = {to_module_name(name): tag for name, tag in self.tags.items()}
        self.rotation_tensors = {to_module_name(name) for name in self.rotation_tensors}

    def split(self, parts_of) -> None:
        """Address the parts of fused tensors by the model's parameter names from now on: `parts_of(name)` lists
        (part name, function from the fused tensor to the part) for a tensor the model holds split, [] otherwise.
        The parts take the fused tensor's tag; the fused tensor itself is no longer listed."""
        for name in sorted(self._file_of):
            parts = parts_of(name)
            if not parts:
                continue
            tag = self.tags.pop(name, None)
            for part, extract in parts:
                self._derived[part] = (name, extract)
                if tag is not None:
                    self.tags[part] = tag

    def stored_name(self, name: str) -> str:
        return self._stored.get(name, name)

    @property
    def model_quant_type(self) -> str:
        return str(self.description.get("model_quant_type", "Unknown"))

    def names(self) -> set[str]:
        """The tagged tensors (online rotation matrices are untagged and handled by rotations.py)."""
        fused = {source for source, _ in self._derived.values()}
        return (set(self._file_of) - self.rotation_tensors - fused) | set(self._derived)

    def tensor(self, name: str) -> torch.Tensor:
        if name in self._derived:
            source, extract = self._derived[name]
            return extract(self.tensor(source))
        file = self._file_of[name]
        handle = self._handles.get(file)
        if handle is None:
            handle = self._handles[file] = safe_open(file, framework="pt")
        return handle.get_tensor(self.stored_name(name))

    def close(self) -> None:
        """Drop the open files (and their mapped pages) once the tensors are read; `tensor` reopens on demand."""
        self._handles.clear()

    def meta(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        """dtype and shape without reading the data (split parts are computed: they are small tower tensors)."""
        if name in self._derived:
            part = self.tensor(name)
            return part.dtype, tuple(part.shape)
        return self._meta[name]


_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
