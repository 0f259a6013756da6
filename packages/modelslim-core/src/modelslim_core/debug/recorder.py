"""The recorder processors report what they found to: one per run, reachable as `context.recorder`.

Two kinds of record, both keyed by (namespace, key):

- `recorder.debug(namespace, key, value)`: kept only under `--debug` (otherwise a no-op, so processors call
  it unconditionally; check `recorder.debug_enabled` first only when building the value is itself costly).
  Values may be CPU or device tensors (copied to CPU at once, so later in-place edits do not change the
  record), numbers, strings, None, and lists/tuples/dicts of those; anything else is kept as `str(value)`. Written after the run to
  `save_path/debug_info/` (persistence.py).
- `recorder.stat(section, key, value)`: always kept; JSON scalars or small dicts of them (no tensors). They
  become sections of `quant_report.json` (e.g. `layers`: per-linear quantization error).

Namespaces in use (add yours to README.md "Debug mode"): `linear_quant` (per-linear weight statistics,
per-channel weight error, activation parameters), smoothing `smooth_scales` (`<linear>.scales`,
`<linear>.shift`), rotation `rotation_matrices` (`hidden`, `head_dim`, `<linear>.<online tensor>`), searches
`search` (`<subgraph>.alpha` / `.beta`), MoE `expert_tokens` (`<experts>.<i>` with combine="sum").

Data parallel: every rank records what it sees. `gather()` (a collective: every rank calls it at the same
point) sends the other ranks' records to rank 0 and clears them there; rank 0 keeps its own value for a key
that several ranks recorded (`combine="first"`, right for results every rank computes identically) or adds
them up (`combine="sum"`, for counts over each rank's share of the samples).
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Literal

import torch

from modelslim_core.runtime.distributed import rank_and_world

Combine = Literal["first", "sum"]
#: How deep lists/dicts inside one debug value may nest (deeper structures are a processor bug).
MAX_DEPTH = 10


class Recorder:
    """Debug records and report statistics of one run (see the module docstring for the contract)."""

    def __init__(self, debug_dir: Path | None = None):
        #: Where `--debug` output goes; None: debug recording is off.
        self.debug_dir = debug_dir
        self.debug_records: dict[str, dict[str, Any]] = {}
        self.stats: dict[str, dict[str, Any]] = {}
        self._combine: dict[tuple[str, str, str], Combine] = {}
        self._copies: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}

    def __getstate__(self) -> dict:
        """Picklable (data-parallel workers receive the context): the copy cache holds weak references."""
        return {**self.__dict__, "_copies": {}}

    @property
    def debug_enabled(self) -> bool:
        return self.debug_dir is not None

    def debug(self, namespace: str, key: str, value: Any, combine: Combine = "first") -> None:
        """Keep `value` under `namespace`/`key` for debug_info (no-op unless `--debug`)."""
        if not self.debug_enabled:
            return
        self.debug_records.setdefault(namespace, {})[key] = self._to_cpu(value, 0)
        if combine != "first":
            self._combine[("debug", namespace, key)] = combine

    def stat(self, section: str, key: str, value: Any, combine: Combine = "first") -> None:
        """Keep a JSON-able statistic for quant_report.json (always)."""
        if isinstance(value, torch.Tensor):
            raise TypeError(f"recorder.stat({section!r}, {key!r}): tensors belong in recorder.debug, not the report")
        self.stats.setdefault(section, {})[key] = value
        if combine != "first":
            self._combine[("stat", section, key)] = combine

    def _to_cpu(self, value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ValueError(f"debug value nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, torch.Tensor):
            # The same tensor object recorded twice (e.g. one smoothing scale for every linear behind a norm)
            # is copied once, so persistence stores it once. The weak reference guards against a reused id.
            known = self._copies.get(id(value))
            if known is not None and known[0]() is value and known[1] == value._version:
                return known[2]
            copy = value.detach().to("cpu", copy=True).contiguous()
            self._copies[id(value)] = (weakref.ref(value), value._version, copy)
            return copy
        if isinstance(value, dict):
            return {str(k): self._to_cpu(v, depth + 1) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._to_cpu(v, depth + 1) for v in value]
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        return str(value)  # anything else as text now: records stay loadable from a resume state

    # --- resume ---------------------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """What a resumed run needs to report the units finished before the interruption (torch.save-able)."""
        return {"debug": self.debug_records, "stats": self.stats}

    def restore(self, snapshot: dict[str, Any] | None) -> None:
        if snapshot:
            self.debug_records, self.stats = snapshot["debug"], snapshot["stats"]

    # --- data parallel --------------------------------------------------------------------------------------
    def gather(self) -> None:
        """Collect every rank's records on rank 0 (a collective; a no-op in a single process)."""
        rank, world = rank_and_world()
        if world == 1:
            return
        import torch.distributed as dist

        mine = {"debug": self.debug_records, "stat": self.stats, "combine": self._combine}
        received: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object(mine, received, dst=0)
        if rank != 0:
            self.debug_records, self.stats, self._copies = {}, {}, {}
            return
        for other in received[1:]:
            self._combine.update(other["combine"])
            self._merge("debug", self.debug_records, other["debug"])
            self._merge("stat", self.stats, other["stat"])

    def _merge(self, kind: str, into: dict[str, dict[str, Any]], other: dict[str, dict[str, Any]]) -> None:
        for namespace, records in other.items():
            target = into.setdefault(namespace, {})
            for key, value in records.items():
                if key not in target:
                    target[key] = value
                elif self._combine.get((kind, namespace, key)) == "sum":
                    target[key] = target[key] + value
