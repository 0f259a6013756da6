"""The export-tag registry: everything the project knows about one checkpoint tag, in one entry.

A tag (W8A8, W4A8_DYNAMIC, C8, ...) is what quant_model_description.json says about a tensor. Its entry holds
the exporter that writes its tensors, the reference-runtime kernel that reads them back (whose `expected()` is
the tensors' name/dtype/shape rules), its bit widths, its rank in `model_quant_type`, the savers that write it
and how each serving engine loads it (or why not, and what to use instead). Savers, the reference runtime,
dry-run, the engine-conformance harness, the load-time refusal and docs/formats.md all read these entries, so
adding a tag is one registration in formats/tags.py (plus its exporter in formats/exporters.py and its kernel).

Exporters and kernels are named by import path ("module:attribute") and imported on first use: the registry
itself is plain data, cheap to import where a YAML is checked before torch or a model is loaded.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

VLLM_ASCEND = "vllm-ascend"
VLLM_ASCEND_310P = "vllm-ascend-310p"
MINDIE_SD = "mindie-sd"
#: Engines whose loaders the harness runs (tests/engines), with the versions the facts were proven against.
ENGINE_VERSIONS = {VLLM_ASCEND: "vllm-ascend 0.23.0", VLLM_ASCEND_310P: "vllm-ascend 0.23.0 (310P path)",
                   MINDIE_SD: "mindiesd 3.1.0"}
ENGINE_NAMES = {VLLM_ASCEND: "vLLM-Ascend", VLLM_ASCEND_310P: "vLLM-Ascend on Atlas 300I (310P)",
                MINDIE_SD: "MindIE-SD"}

Kind = Literal["float", "linear", "attention", "extras"]
Packing = Literal["rows", "columns"]


@dataclass(frozen=True)
class Support:
    """How an engine loads one tag: which variants it reads correctly."""

    per_group: bool = False  # per-group weight scales ([out, in/group]); False: only [out, 1]
    asymmetric_weights: bool = True  # False: the kernel ignores weight_offset
    experts_only: bool = False  # registered for MoE experts only (dense linears fail)
    mla_only: bool = False  # attention quantization only on MLA (DeepSeek-style) attention


LOADS = Support()


def _resolve(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class TagFormat:
    """One checkpoint tag."""

    tag: str
    kind: Kind
    summary: str
    weight_bits: int | None = None  # bits per stored weight element (None: not a weight format)
    act_bits: int | None = None  # activation bits the kernel quantizes to (16: float activations)
    rank: int | None = None  # model_quant_type ranking (the highest-ranked proposed tag wins); None: never proposed
    packing: Packing | None = None  # two 4-bit codes per byte along output rows or input columns
    deq_scale: bool = False  # carries a deq_scale whose layout depends on the serving dtype
    exporter: str | None = None  # "module:function" (name, QuantizedLinear, ExportDtypes) -> tensors
    kernel: str | None = None  # "module:Class" reference-runtime kernel (its expected() are the tensor rules)
    savers: frozenset[str] = frozenset()  # saver types that write it
    engines: Mapping[str, Support] = field(default_factory=dict)  # engine -> how it loads (absent: not loaded)
    alternative: str | None = None  # what to use instead where an engine does not load it
    unloaded: str | None = None  # why an engine that does not load it refuses it (default: no scheme for it)
    aliases: tuple[str, ...] = ()  # other names of the same layout the reference runtime reads back

    def __post_init__(self) -> None:
        object.__setattr__(self, "engines", MappingProxyType(dict(self.engines)))

    def load_exporter(self):
        return _resolve(self.exporter) if self.exporter else None

    def load_kernel(self):
        return _resolve(self.kernel)() if self.kernel else None


class TagRegistry:
    """Tags by name; every view the rest of the project needs is derived here, never kept as a second list."""

    def __init__(self) -> None:
        self._formats: dict[str, TagFormat] = {}
        self._kernels: dict[str, Any] | None = None

    def register(self, fmt: TagFormat) -> TagFormat:
        if fmt.tag in self._formats:
            raise ValueError(f"tag {fmt.tag} is registered twice")
        self._formats[fmt.tag] = fmt
        self._kernels = None
        return fmt

    def __getitem__(self, tag: str) -> TagFormat:
        return self._formats[tag]

    def __contains__(self, tag: object) -> bool:
        return tag in self._formats

    def __iter__(self) -> Iterator[TagFormat]:
        return iter(self._formats.values())

    def get(self, tag: str) -> TagFormat | None:
        return self._formats.get(tag)

    def tags(self, kind: Kind | None = None) -> tuple[str, ...]:
        return tuple(f.tag for f in self if kind is None or f.kind == kind)

    def written_by(self, saver: str) -> frozenset[str]:
        return frozenset(f.tag for f in self if saver in f.savers)

    def exporters(self) -> dict[str, Any]:
        """tag -> exporter function, for every tag with an ascendv1-layout exporter."""
        return {f.tag: f.load_exporter() for f in self if f.exporter}

    def kernels(self) -> dict[str, Any]:
        """tag (and alias) -> reference-runtime kernel instance."""
        if self._kernels is None:
            kernels = {}
            for f in self:
                if f.kernel:
                    kernel = f.load_kernel()
                    kernels.update({name: kernel for name in (f.tag, *f.aliases)})
            self._kernels = kernels
        return self._kernels

    def support(self, engine: str) -> dict[str, Support]:
        """tag -> how `engine` loads it, for every tag it loads."""
        return {f.tag: f.engines[engine] for f in self if engine in f.engines}

    def ranking(self) -> tuple[str, ...]:
        """Proposable tags, lowest rank first (model_quant_type is the highest any layer proposes)."""
        return tuple(f.tag for f in sorted((f for f in self if f.rank is not None), key=lambda f: f.rank))

    def weight_bits(self, tag: str, default: int = 8) -> int:
        fmt = self.get(tag)
        return fmt.weight_bits if fmt is not None and fmt.weight_bits is not None else default

    def packing(self, tag: str) -> Packing | None:
        fmt = self.get(tag)
        return fmt.packing if fmt is not None else None
