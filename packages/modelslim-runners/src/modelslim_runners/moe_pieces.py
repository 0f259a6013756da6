"""Calibrated stages on a MoE layer too large for the memory budget: the layer in pieces.

The layer is split into its trunk (attention, norms, router, shared experts: everything but the routed
experts) and groups of routed experts. The trunk is loaded first and stays; each processor in turn runs
its preprocess, one forward of the trunk over the calibration inputs (the routed experts replaced by a
stand-in that records what reaches them: hidden states, chosen experts, routing weights, one record per
sample, captured once) and its postprocess. Then every group of experts is loaded, and each processor
preprocesses it, runs the group over that processor's captured records (the routed tokens of each expert,
or all tokens where statistics are collected: `PerExpertMoE.add_expert_outputs`, the same code and order
as the whole layer's forward), postprocesses it; the group is saved and released before the next one.

The layer's outputs (the next layer's inputs) are assembled exactly as a whole-layer run makes them:
 - when the last calibrating processor leaves its forward's outputs valid (static ranges, smoothing), the
   outputs are that forward's: a copy of the trunk in that processor's calibration state is kept, the
   expert groups add their outputs (computed in the same state) per sample, and the copy is replayed with
   the experts' sum in place of the experts, statistics paused;
 - when they are stale (GPTQ calibrates on float weights), the trunk, now final, is run once more to
   capture the experts' final inputs, each group adds its quantized outputs before it is released, and the
   final trunk is replayed with that sum.
Savers receive the trunk before the experts, the expert groups in order, then the rest of the trunk, linear
by linear: the same tensors in the same order as a whole-layer run, so the checkpoint is byte-identical
whatever the group size.

With several data-parallel ranks the groups of routed experts are split across them (round robin, starting
at a rank that moves with the unit index): every rank runs the trunk over its own samples (statistics reduced
as for a whole unit), then the ranks all-gather what reached the experts, in the single-process sample order
(`gather_in_sample_order`). The owner of a group alone loads it, calibrates it over every sample
(`working_alone`: the computation one process does) and sends the quantized group to rank 0, which saves it in
order. Each owner records its experts' weighted outputs (the rows `add_expert_outputs` adds) and adds them to
the per-sample running sums, which travel from owner to owner in group order, so every token's sum over the
experts is made in the single-process order; the last owner hands each rank its samples' sums. A rank loads
only its own groups; every rank holds the experts' inputs of every sample while the groups run.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from modelslim_core.models.moe import PerExpertMoE
from modelslim_core.runtime.distributed import all_reduce, gather_in_sample_order, working_alone
from modelslim_core.runtime.observation import pause_statistics
from modelslim_core.runtime.processor import Processor
from modelslim_core.runtime.saver import Saver
from modelslim_core.runtime.unit import Unit, UnitInput
from modelslim_runners.pieces import forward_replaced, linear_pieces
from modelslim_runners.split_pieces import receive_piece, send_piece

logger = logging.getLogger(__name__)


@dataclass
class ExpertCall:
    """What reached the routed experts in one sample's forward."""

    hidden: torch.Tensor
    index: torch.Tensor
    weights: torch.Tensor


class _AddedRows:
    """Stands in for one sample's output tensor in `PerExpertMoE.add_expert_outputs`: records the rows each
    expert adds (in order) so they can be added later, with the same operation, to the running sums."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype
        self.rows: list[tuple[torch.Tensor, torch.Tensor]] = []

    def index_add_(self, dim: int, index: torch.Tensor, source: torch.Tensor) -> None:
        self.rows.append((index, source))

    def add_to(self, total: torch.Tensor) -> None:
        for index, source in self.rows:
            total.index_add_(0, index.to(total.device), source.to(total.device))


def routed_experts(unit: Unit) -> tuple[str, PerExpertMoE] | None:
    """(path, module) of the unit's routed experts when it has exactly one experts module."""
    found = [(path, module) for path, module in unit.module.named_modules() if isinstance(module, PerExpertMoE)]
    return found[0] if len(found) == 1 and found[0][0] else None


def expert_of(path: str, experts_path: str) -> int | None:
    """The routed expert a module path (relative to the unit) belongs to; None for the trunk."""
    prefix = experts_path + "."
    return int(path[len(prefix):].split(".", 1)[0]) if path.startswith(prefix) else None


def trunk_piece(unit: Unit, experts_path: str) -> Unit:
    paths = [path for path, _ in unit.module.named_modules() if expert_of(path, experts_path) is None]
    return Unit(unit.name, unit.module, unit.index, parts=frozenset(paths), label="trunk")


def expert_group_piece(unit: Unit, experts_path: str, experts: range) -> Unit:
    return Unit(unit.name, unit.module, unit.index, subtrees=tuple(f"{experts_path}.{e}" for e in experts),
                label=f"{experts_path}.{experts.start}-{experts.stop - 1}")


@dataclass
class SavePlan:
    """The unit's linear-by-linear save pieces, split into trunk-before, per expert, trunk-after."""

    before: list[Unit]
    experts: dict[int, list[Unit]]
    after: list[Unit]


def save_plan(unit: Unit, experts_path: str) -> SavePlan:
    """Save pieces in module order (the order a whole-unit save writes), each assigned to its region."""
    plan = SavePlan([], {}, [])
    seen_experts = False
    for piece in linear_pieces(unit):
        paths = list(piece.subtrees) or sorted(piece.parts or ())
        by_region: dict[int | None, list[str]] = {}
        for path in paths:
            by_region.setdefault(expert_of(path, experts_path), []).append(path)
        for region, region_paths in by_region.items():
            part = piece if len(by_region) == 1 else Unit(unit.name, unit.module, unit.index,
                                                          parts=frozenset(region_paths), label=piece.label)
            if region is None:
                (plan.after if seen_experts else plan.before).append(part)
            else:
                plan.experts.setdefault(region, []).append(part)
        seen_experts = seen_experts or any(region is not None for region in by_region)
    return plan


def frozen_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` with its own modules and tensors (cloned), sharing hooks and observers: the state of
    a calibration forward, kept for one replay while the original moves on (statistics paused then)."""
    clone = copy.copy(module)
    clone._parameters = {name: None if p is None else nn.Parameter(p.detach().clone(), requires_grad=False)
                         for name, p in module._parameters.items()}
    clone._buffers = {name: None if b is None else b.clone() for name, b in module._buffers.items()}
    clone._modules = {name: None if m is None else frozen_copy(m) for name, m in module._modules.items()}
    return clone


def release_trunk(unit: Unit, experts_path: str) -> None:
    """Put every tensor of the trunk on `meta`, including what processors put in place of its linears."""
    for path, module in unit.module.named_modules():
        if expert_of(path, experts_path) is not None:
            continue
        for name, param in module._parameters.items():
            if param is not None and not param.is_meta:
                module._parameters[name] = nn.Parameter(param.detach().to("meta"), requires_grad=False)
        for name, buffer in module._buffers.items():
            if buffer is not None and not buffer.is_meta:
                module._buffers[name] = buffer.to("meta")


class MoEPieceRun:
    """One calibrated MoE unit, processed in pieces (see the module docstring)."""

    def __init__(self, pipeline: Any, unit: Unit, experts_path: str, processors: list[Processor],
                 savers: list[Saver], inputs: Sequence[UnitInput], is_last: bool, experts_per_group: int,
                 needs: Callable[[Unit], int], checkpoint: Callable[[dict], None] | None = None,
                 resume: dict | None = None):
        self.pipeline = pipeline
        self.unit = unit
        self.experts_path = experts_path
        self.moe: PerExpertMoE = unit.module.get_submodule(experts_path)
        self.processors = processors
        self.savers = savers
        self.inputs = inputs
        self.outputs_needed = not is_last
        self.group_size = max(1, experts_per_group)
        self.needs = needs
        self.data = [type(p).needs_data(p.config) for p in processors]
        #: The last processor that calibrates: its forward's outputs are the unit's, unless they are stale.
        self.last = max(i for i, d in enumerate(self.data) if d)
        self.captured: dict[int, Sequence[ExpertCall]] = {}
        self.final_calls: Sequence[ExpertCall] | None = None
        self.snapshot: nn.Module | None = None
        self.sums: list[torch.Tensor] | None = None
        self.final_mode: bool | None = None  # None: not decided yet
        self.checkpoint = checkpoint
        self.resume = resume
        #: Several ranks: the groups are split across them (see the module docstring).
        self.split = pipeline.world > 1
        #: The rank holding the running sums of every sample (split groups); None before the first group.
        self.holder: int | None = None

    # --- forwards ---------------------------------------------------------------------------------------
    def _run(self, module: nn.Module, sample: UnitInput) -> torch.Tensor:
        device = self.pipeline.placement.device
        from modelslim_runners.placement import move

        output = module(*move(sample.args, device), **move(sample.kwargs, device))
        return output[0] if isinstance(output, (tuple, list)) else output

    def _capture(self) -> Sequence[ExpertCall]:
        """Run the trunk over every sample, recording what reaches the routed experts (which add nothing)."""
        back = self.pipeline.placement.activation_device
        calls: list[ExpertCall] = []

        def record(hidden: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
            self.moe.seen_tokens += hidden.shape[0]
            calls.append(ExpertCall(hidden.detach().to(back), index.to(back), weights.detach().to(back)))
            return torch.zeros_like(hidden)

        with forward_replaced(self.moe, record):
            for sample in self.inputs:
                self._run(self.unit.module, sample)
        return self.pipeline.spill.keep(calls)

    def _replay(self, module: nn.Module) -> Sequence[Any]:
        """Run `module` (the trunk, or its calibration-state copy) with the experts' summed outputs in place."""
        moe = module.get_submodule(self.experts_path)
        back = self.pipeline.placement.activation_device
        sums = iter(self.sums or [])

        def replay(hidden: torch.Tensor, index: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
            total = next(sums).to(hidden.device)
            self.moe.add_identity_outputs(total, hidden, index, weights)
            return total

        def outputs() -> Iterator[torch.Tensor]:
            with forward_replaced(moe, replay), pause_statistics():
                for sample in self.inputs:
                    yield self._run(module, sample).to(back)

        return self.pipeline.spill.keep(outputs())

    def _add_group(self, calls: Sequence[ExpertCall], experts: range, into: list[torch.Tensor] | None) -> None:
        """Run a group of experts over the captured calls; add their outputs to `into` (per sample) if given."""
        device = self.pipeline.placement.device
        all_tokens = self.moe.observing(experts)
        for sample, call in enumerate(calls):
            hidden = call.hidden.to(device)
            target = into[sample] if into is not None else torch.zeros_like(hidden)
            self.moe.add_expert_outputs(target, hidden, call.index.to(device), call.weights.to(device), experts,
                                        all_tokens)

    def _new_sums(self, calls: Sequence[ExpertCall]) -> list[torch.Tensor]:
        return [torch.zeros_like(call.hidden) for call in calls]

    # --- the unit -----------------------------------------------------------------------------------------
    def run(self) -> Sequence[UnitInput] | None:
        pipeline, unit = self.pipeline, self.unit
        trunk = trunk_piece(unit, self.experts_path)
        trunk_need = self.needs(trunk)  # from the float linears: processors replace them as they go
        pipeline.enter_calibrated_piece(trunk, trunk_need)
        stale_from_last = False
        for index, processor in enumerate(self.processors):
            processor.preprocess(trunk)
            if self.data[index]:
                if index == self.last and self.outputs_needed:
                    self.snapshot = frozen_copy(unit.module)  # the state the unit's outputs come from
                self.captured[index] = self._gathered(self._capture())
            processor.postprocess(trunk)
            stale_from_last |= index >= self.last and processor.outputs_stale(trunk)
        plan = save_plan(unit, self.experts_path)
        first = 0
        if self.resume is None:
            if stale_from_last:
                self._decide(final=True)
            self._save(plan.before)
        else:  # the trunk was redone (same result); what the killed run had done after it is restored
            first = self._restore(self.resume)
        for start in range(first, len(self.moe), self.group_size):
            experts = range(start, min(len(self.moe), start + self.group_size))
            if self.split:
                self._run_split_group(experts, plan, start // self.group_size)
            else:
                self._run_group(experts, plan)
            self._checkpoint(start + self.group_size)
        self._save(plan.after)
        outputs = None
        if self.outputs_needed:
            if self.final_mode is None:
                self._decide(final=False)
            if self.split:
                self._hand_back_sums()
            outputs = self._replay(unit.module if self.final_mode else self.snapshot)
        if self.split:
            self._merge_routing_counts()
        self.snapshot = None
        release_trunk(unit, self.experts_path)
        pipeline.leave_calibrated_piece(trunk, trunk_need)
        if outputs is None:
            return None
        return pipeline.spill.keep(pipeline.adapter.next_unit_input(out, inp) for out, inp in zip(outputs, self.inputs))

    def _checkpoint(self, next_group: int) -> None:
        """After a group is saved: what a killed run needs to continue with the next group."""
        if self.checkpoint is None or next_group >= len(self.moe):
            return
        if self.split and (next_group // self.group_size) % self.pipeline.world:
            return  # split groups: once per round of the ranks, so owners calibrate their groups side by side
        self.checkpoint({"next_group": next_group, "group_size": self.group_size, "final_mode": self.final_mode,
                         "sums": None if self.sums is None else list(self.sums), "holder": self.holder,
                         "routed_tokens": list(self.moe.routed_tokens), "seen_tokens": self.moe.seen_tokens,
                         "all_token_tokens": self.moe.all_token_tokens})

    def _restore(self, state: dict) -> int:
        """Continue a killed run: processors' and recorder state as they were after its last group (the redone
        trunk recorded the same again), its group boundaries, summed expert outputs and routing counts."""
        for processor, processor_state in zip(self.processors, state["processors"], strict=True):
            processor.load_state_dict(processor_state)
        self.pipeline.context.recorder.restore(state["recorder"])
        self.moe.routed_tokens = list(state["routed_tokens"])
        self.moe.seen_tokens, self.moe.all_token_tokens = state["seen_tokens"], state["all_token_tokens"]
        if state["final_mode"] is not None:
            self._decide(final=state["final_mode"])
        if state["sums"] is not None:
            self.sums = list(state["sums"])
        self.holder = state.get("holder")
        logger.info("%s: resuming at routed expert %d (groups of %d).", self.unit.name, state["next_group"],
                    self.group_size)
        return state["next_group"]

    def _decide(self, final: bool) -> None:
        """Fix where the unit's outputs come from; for final outputs, capture the final trunk's expert inputs."""
        self.final_mode = final
        if not self.outputs_needed:
            return
        if final:
            self.snapshot = None
            self.final_calls = self._gathered(self._capture())
            self.sums = None if self.split else self._new_sums(self.final_calls)  # split: the first owner's
        elif not self.split:
            self.sums = self.sums if self.sums is not None else self._new_sums(self.captured[self.last])

    def _run_group(self, experts: range, plan: SavePlan) -> None:
        piece = expert_group_piece(self.unit, self.experts_path, experts)
        need = self.needs(piece)
        self.pipeline.enter_calibrated_piece(piece, need)
        stale_from_last = False
        for index, processor in enumerate(self.processors):
            processor.preprocess(piece)
            makes_outputs = index == self.last and self.outputs_needed and not self.final_mode
            if self.data[index] and (processor.needs_forward(piece) or makes_outputs):
                if makes_outputs and self.sums is None:
                    self.sums = self._new_sums(self.captured[index])
                self._add_group(self.captured[index], experts, self.sums if makes_outputs else None)
            processor.postprocess(piece)
            stale_from_last |= index >= self.last and processor.outputs_stale(piece)
        if self.final_mode is None:
            if stale_from_last and experts.start > 0:
                raise RuntimeError(f"{self.unit.name}: the experts before {experts.start} left their outputs valid, "
                                   "these do not; a layer processed in pieces needs every expert treated alike.")
            if stale_from_last:
                self._decide(final=True)
        if self.final_mode and self.outputs_needed:
            self._add_group(self.final_calls, experts, self.sums)
        for expert in experts:
            self._save(plan.experts.get(expert, []))
        self.pipeline.leave_calibrated_piece(piece, need)

    # --- groups split across ranks -------------------------------------------------------------------------
    def _gathered(self, calls: Sequence[ExpertCall]) -> Sequence[ExpertCall]:
        """Split groups: every rank's captured calls, in the single-process sample order (a collective)."""
        if not self.split:
            return calls
        return self.pipeline.spill.keep(iter(gather_in_sample_order(list(calls))))

    def _run_split_group(self, experts: range, plan: SavePlan, ordinal: int) -> None:
        """Group `ordinal` with several ranks: its owner loads and calibrates it alone over every sample and
        sends it to rank 0, which saves it; the running sums pass to the owner, which adds its experts' rows."""
        pipeline, rank = self.pipeline, self.pipeline.rank
        owner = (self.unit.index + ordinal) % pipeline.world
        piece = expert_group_piece(self.unit, self.experts_path, experts)
        pipeline.split_groups += 1
        rows: list[_AddedRows] | None = None
        if owner == rank:
            pipeline.own_groups += 1
            need = self.needs(piece)
            pipeline.enter_calibrated_piece(piece, need)
            with working_alone():
                rows = self._calibrate_alone(piece, experts)
            if owner != 0:
                send_piece(piece)
                pipeline.leave_calibrated_piece(piece, need)
        elif rank == 0:
            receive_piece(piece, owner, pipeline.placement.device)
        self._pass_sums(owner, rows)
        if rank == 0:
            for expert in experts:
                self._save(plan.experts.get(expert, []))
            if owner == 0:
                pipeline.leave_calibrated_piece(piece, need)
            else:
                pipeline.placement.leave(piece)

    def _calibrate_alone(self, piece: Unit, experts: range) -> list[_AddedRows] | None:
        """The owner's group, as `_run_group` processes it in one process; returns the rows its experts add to
        each sample's output (None: no outputs needed)."""
        rows = None
        stale_from_last = False
        for index, processor in enumerate(self.processors):
            processor.preprocess(piece)
            makes_outputs = index == self.last and self.outputs_needed and not self.final_mode
            if self.data[index] and (processor.needs_forward(piece) or makes_outputs):
                added = [_AddedRows(call.hidden.dtype) for call in self.captured[index]] if makes_outputs else None
                self._add_group(self.captured[index], experts, added)
                rows = added if makes_outputs else rows
            processor.postprocess(piece)
            stale_from_last |= index >= self.last and processor.outputs_stale(piece)
        if stale_from_last and not self.final_mode:  # the other ranks took the trunk's word for it
            raise RuntimeError(f"{self.unit.name}: the routed experts {experts.start}-{experts.stop - 1} left their "
                               "outputs stale, the trunk did not; split across ranks, every piece must agree.")
        if self.final_mode and self.outputs_needed:
            rows = [_AddedRows(call.hidden.dtype) for call in self.final_calls]
            self._add_group(self.final_calls, experts, rows)
        return rows

    def _pass_sums(self, owner: int, rows: list[_AddedRows] | None) -> None:
        """Bring every sample's running sum to `owner` (from the rank that added the previous group) and add the
        rows of its experts: the per-token addition order of one process."""
        if not self.outputs_needed:
            return
        rank = self.pipeline.rank
        if self.holder is None and rank == owner:
            self.sums = self._new_sums(self.final_calls if self.final_mode else self.captured[self.last])
        elif self.holder is not None and self.holder != owner:
            if rank == self.holder:
                dist.send_object_list([self.sums], dst=owner)
                self.sums = None
            elif rank == owner:
                received: list = [None]
                dist.recv_object_list(received, src=self.holder)
                self.sums = received[0]
        self.holder = owner
        if rank == owner:
            for total, added in zip(self.sums, rows, strict=True):
                added.add_to(total)

    def _hand_back_sums(self) -> None:
        """After the last group: every rank receives its own samples' sums (samples are dealt rank::world)."""
        world = self.pipeline.world
        parts = [self.sums[rank::world] for rank in range(world)] if self.pipeline.rank == self.holder else None
        mine: list = [None]
        dist.scatter_object_list(mine, parts, src=self.holder)
        self.sums = mine[0]

    def _merge_routing_counts(self) -> None:
        """Each owner counted its experts' routed tokens over every sample, the others nothing: rank 0 takes the
        layer's totals (its log shows the layer, not a share) and the other ranks zero, so the report's sum over
        ranks stays the single-process count. A collective."""
        moe = self.moe
        counts = torch.tensor([*moe.routed_tokens, moe.seen_tokens, moe.all_token_tokens], dtype=torch.int64)
        summed = all_reduce(counts, "sum").tolist()
        totals = summed if self.pipeline.rank == 0 else [0] * len(summed)
        moe.routed_tokens, moe.seen_tokens, moe.all_token_tokens = totals[:-2], totals[-2], totals[-1]

    def _save(self, pieces: list[Unit]) -> None:
        for piece in pieces:
            for saver in self.savers:
                saver.save_unit(piece)
