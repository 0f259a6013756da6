"""Reusing finished units between runs that differ only in later units (the rounds of `msmodelslim tune`).

A tune round rolls some layers back to float: its config differs from the previous round's only in exclude
patterns. Units before the first unit those patterns touch see the same inputs (calibration propagates
each unit's outputs, quantized, to the next), the same processor state and the same config, so their
calibration statistics (activation ranges, smoothing scales, GPTQ Hessians) and their quantized weights are
exactly those of the earlier run: they are taken from the cache instead of being recomputed. From the first
changed unit on everything is computed again, from the cached inputs of that unit.

Each unit's key chains the key of the unit before it with this unit's own config, so a key names the unit
*and the provenance of its inputs* (which units before it were quantized how). A unit's own config is the
stage's processor configs with every include/exclude list cut down to the patterns that match a module of
that unit (or of the model outside the units); processors whose selections reach beyond the units they
match (`Processor.selection_is_local` is False, e.g. linear_quant with `group_size: auto`, chosen over the
whole model) enter the key whole, so any change to them misses. The key also covers the model files, dtype,
device, version, calibration data, the run context a prior stage handed over, and the processor lifecycle.

An entry holds the processed unit (the module as the savers read it, pickled: loaded only from this private
directory) and, once the unit is done, what the next unit starts from: its inputs, the processors' and run
context's state and the random generator. A run reuses the longest prefix of units whose entries are all
present, so the checkpoint it writes is byte for byte the one a run from scratch writes (tests/tune).

Data-parallel runs (dp_layer_wise): each rank calibrates on its own share of the samples, so each rank keeps
its own entries (the rank is part of the key): its inputs, processor and run-context state and random generator.
The processed units are the same on every rank (statistics are reduced, weights broadcast) and only rank 0's
savers read them, so only rank 0 stores the modules. The ranks agree on the reusable prefix (the shortest of
theirs, one all-reduce) before any of them takes a unit from the cache, so every rank starts at the same unit
and the collectives stay in step; the checkpoint is the one the same data-parallel run from scratch writes.

Enabled by `MSMODELSLIM_UNIT_CACHE=<dir>` (tune sets it to `<save_path>/history/unit_cache`); bounded by
`MSMODELSLIM_UNIT_CACHE_GIB` (default 16; 0 turns the cache off), least recently used entries evicted first. Not used for units
processed in pieces (data-free streaming, MoE layers above the memory budget).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelslim_core.protocol.spec import processor_class
from modelslim_core.runtime.context import RunContext
from modelslim_core.runtime.distributed import all_reduce
from modelslim_core.runtime.fingerprint import model_files_identity, package_version
from modelslim_core.runtime.matching import pattern_matches
from modelslim_core.runtime.processor import ProcessorConfig
from modelslim_core.runtime.runner import Stage
from modelslim_core.runtime.unit import Unit, UnitInput

logger = logging.getLogger(__name__)

CACHE_ENV = "MSMODELSLIM_UNIT_CACHE"
CACHE_GIB_ENV = "MSMODELSLIM_UNIT_CACHE_GIB"
DEFAULT_GIB = 16.0
UNIT_FILE = "unit.pt"
STATE_FILE = "state.pt"  # written last: its presence commits the entry
SELECTION_KEYS = ("include", "exclude")


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def tensor_digest(value: Any) -> str:
    """Digest of a nested structure of tensors and plain values (calibration samples, a prior stage's state)."""
    digest = hashlib.sha256()

    def visit(item: Any) -> None:
        if isinstance(item, torch.Tensor):
            cpu = item.detach().cpu().contiguous()
            digest.update(f"T{cpu.dtype}{tuple(cpu.shape)}".encode())
            digest.update(cpu.view(torch.uint8).numpy().tobytes() if cpu.numel() else b"")
        elif isinstance(item, dict):
            for key in sorted(item, key=str):
                digest.update(f"K{key}".encode())
                visit(item[key])
        elif isinstance(item, (list, tuple)):
            digest.update(f"L{len(item)}".encode())
            for element in item:
                visit(element)
        elif isinstance(item, UnitInput):
            visit((item.args, item.kwargs))
        else:
            digest.update(f"V{item!r}".encode())

    visit(value)
    return digest.hexdigest()


def _cut_selections(value: Any, keep: Callable[[str], bool]) -> Any:
    """`value` (a processor config dump) with every include/exclude list cut to the patterns `keep` accepts."""
    if isinstance(value, dict):
        return {key: ([p for p in item if keep(p)]
                      if key in SELECTION_KEYS and isinstance(item, list) and all(isinstance(p, str) for p in item)
                      else _cut_selections(item, keep))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_cut_selections(item, keep) for item in value]
    return value


def _matcher(names: list[str]) -> Callable[[str], bool]:
    known: dict[str, bool] = {}

    def matches(pattern: str) -> bool:
        if pattern not in known:
            known[pattern] = any(pattern_matches(pattern, name) for name in names)
        return known[pattern]

    return matches


def _with_aliases(names: list[str], context: RunContext) -> list[str]:
    aliases = getattr(context.adapter, "name_aliases", None)
    return names if aliases is None else [alias for name in names for alias in (name, *aliases(name))]


def _unit_names(context: RunContext, unit: Unit) -> list[str]:
    """Every name a pattern may select in the unit: its modules and the adapter's linear sites (a family that
    stores MoE experts fused presents each expert under a name no module has), with their aliases."""
    names = [unit.name, *(f"{unit.name}.{path}" for path, _ in unit.module.named_modules() if path)]
    names += [site.name for site in context.adapter.linear_sites(unit)]
    return _with_aliases(list(dict.fromkeys(names)), context)


def unit_keys(context: RunContext, model: nn.Module, units: list[Unit], stage: Stage, world: int,
              rank: int = 0) -> list[str]:
    """One key per unit: the key of the unit before it chained with this unit's own config (module docstring);
    with several ranks each rank has its own chain (its own share of the samples).

    A pattern that matches no name at all enters every key (the base): a name this enumeration misses must
    never let a changed pattern go unnoticed."""
    configs: list[ProcessorConfig] = list(stage.processors)
    local = [processor_class(config).selection_is_local(config) for config in configs]
    dumps = [config.model_dump(mode="json") for config in configs]
    local_dumps = [dump for dump, is_local in zip(dumps, local) if is_local]
    unit_prefixes = tuple(unit.name for unit in units)
    outside = _with_aliases([name for name, _ in model.named_modules()
                             if not any(name == u or name.startswith(u + ".") for u in unit_prefixes)], context)
    per_unit = [_matcher(_unit_names(context, unit)) for unit in units]
    in_outside = _matcher(outside)

    def in_base(pattern: str) -> bool:
        return in_outside(pattern) or not any(matches(pattern) for matches in per_unit)

    samples = tensor_digest(stage.samples) if stage.samples is not None else None
    base = {
        "version": package_version(), "model": model_files_identity(context.model_path),
        "dtype": str(context.compute_dtype), "device": context.device.type, "world": world, "rank": rank,
        "stage": stage.name,
        "dataset": stage.dataset, "samples": samples, "context_state": tensor_digest(context.state),
        "processors": [_cut_selections(dump, in_base) if is_local else dump for dump, is_local in zip(dumps, local)],
    }
    key = _sha(base)
    keys = []
    for unit, matches in zip(units, per_unit):
        own = [_cut_selections(dump, matches) for dump in local_dumps]
        key = _sha({"previous": key, "unit": unit.name, "index": unit.index, "config": own})
        keys.append(key)
    return keys


class UnitCache:
    """The cache entries of one stage's units (keys from `unit_keys`)."""

    def __init__(self, root: Path, keys: list[str], max_bytes: int, keeps_units: bool = True):
        self.root = root
        self.keys = keys
        self.max_bytes = max_bytes
        #: False on data-parallel ranks other than 0: their savers are rank 0's, so they keep only the state
        self.keeps_units = keeps_units
        self._chain = True  # False once a unit went uncached: later entries could never be reached

    @classmethod
    def for_stage(cls, context: RunContext, model: nn.Module, units: list[Unit], stage: Stage,
                  world: int, rank: int = 0) -> "UnitCache | None":
        """The cache when MSMODELSLIM_UNIT_CACHE names a directory and the run can use it; else None."""
        directory = os.environ.get(CACHE_ENV, "")
        if not directory:
            return None
        gib = float(os.environ.get(CACHE_GIB_ENV, "") or DEFAULT_GIB)
        if gib <= 0:
            return None
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True, mode=0o750)
        return cls(root, unit_keys(context, model, units, stage, world, rank), int(gib * 2**30), keeps_units=rank == 0)

    def _entry(self, index: int) -> Path:
        return self.root / self.keys[index]

    def reusable_prefix(self) -> int:
        """How many leading units have a committed entry; with several ranks, the fewest any rank has (a
        collective: every rank calls it once, at the start of the stage)."""
        count = 0
        while count < len(self.keys) and (self._entry(count) / STATE_FILE).is_file():
            count += 1
        return int(all_reduce(torch.tensor([count]), "min")[0])

    def load_unit(self, index: int) -> nn.Module:
        """The processed module of unit `index` (written by this cache; pickled modules are not weights-only)."""
        entry = self._entry(index)
        os.utime(entry)  # least recently used goes first
        return torch.load(entry / UNIT_FILE, weights_only=False, map_location="cpu")

    def load_state(self, index: int) -> dict[str, Any]:
        """What the unit after `index` starts from: inputs, processors, context_state, rng."""
        state = torch.load(self._entry(index) / STATE_FILE, weights_only=True)
        if state["inputs"] is not None:
            state["inputs"] = [UnitInput(args, kwargs) for args, kwargs in state["inputs"]]
        return state

    def store_unit(self, index: int, module: nn.Module) -> None:
        """The processed unit, before the placement releases it (a rank that keeps no units opens the entry)."""
        if not self._chain:
            return
        entry = self._entry(index)
        if not self.keeps_units:
            shutil.rmtree(entry, ignore_errors=True)
            entry.mkdir(mode=0o750)
            return
        buffer = io.BytesIO()
        try:
            torch.save(module, buffer)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:  # e.g. a hook holding a local function
            logger.warning("Unit cache: %s cannot be kept (%s); later rounds recompute it and the units after it.",
                           type(module).__name__, exc)
            self._chain = False
            return
        shutil.rmtree(entry, ignore_errors=True)
        entry.mkdir(mode=0o750)
        _write_private(entry / UNIT_FILE, buffer.getvalue())

    def store_state(self, index: int, inputs: Sequence[UnitInput] | None, processors: list[dict],
                    context_state: dict[str, Any]) -> None:
        """Commit unit `index`'s entry with what the next unit starts from (skipped if the unit was not stored)."""
        entry = self._entry(index)
        if not self._chain or not ((entry / UNIT_FILE).is_file() if self.keeps_units else entry.is_dir()):
            self._chain = False
            return
        buffer = io.BytesIO()
        torch.save({"inputs": None if inputs is None else [(item.args, item.kwargs) for item in inputs],
                    "processors": processors, "context_state": context_state, "rng": torch.get_rng_state()}, buffer)
        _write_private(entry / STATE_FILE, buffer.getvalue())
        self._evict()

    def skip(self) -> None:
        """A unit was processed without an entry (in pieces): no later unit of this run is stored."""
        self._chain = False

    def _evict(self) -> None:
        entries = [(p.stat().st_mtime, p, sum(f.stat().st_size for f in p.iterdir())) for p in self.root.iterdir()
                   if p.is_dir()]
        total = sum(size for _, _, size in entries)
        for _, path, size in sorted(entries, key=lambda e: e[0]):
            if total <= self.max_bytes:
                break
            shutil.rmtree(path, ignore_errors=True)
            total -= size


def _write_private(path: Path, data: bytes) -> None:
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.chmod(0o640)
    os.replace(partial, path)
