"""The unit pipeline every runner shares.

For each stage: load the model (the placement decides how), build the stage's processors and savers,
capture the first unit's inputs (only if some processor needs calibration data; from the stage's dataset,
or from model inputs the service prepared), then for each unit run every processor's preprocess →
forward (only when that processor asks for it) → postprocess, hand the unit to the savers, and feed the
unit's outputs to the next unit. A unit's forward runs once per data-consuming processor and never
otherwise, except once to produce the next unit's inputs when no processor ran it or the last one that did
reports its outputs stale (GPTQ calibrates on float weights).
Stages do not share weights: a `prior` stage hands its results to later stages through the run context.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from modelslim_core.attention.processor import check_attention_selections
from modelslim_core.calib.text import load_texts
from modelslim_core.debug import write_debug_info
from modelslim_core.protocol.spec import build_processor, build_saver, processor_class
from modelslim_core.runtime.context import RunContext
from modelslim_core.runtime.distributed import rank_and_world, working_alone
from modelslim_core.runtime.processor import Processor
from modelslim_core.runtime.runner import Stage
from modelslim_core.runtime.selection_check import check_layer_selections
from modelslim_core.runtime.saver import Saver
from modelslim_core.runtime.storage import compute_in
from modelslim_core.quant.quantized_linear import release_dequantized
from modelslim_core.runtime.unit import Unit, UnitInput
from modelslim_runners.memory import nested_tensor_bytes, rss_bytes
from modelslim_runners.dense_pieces import RESUME_KIND, DensePieceRun, DenseSplit, dense_split
from modelslim_runners.moe_pieces import MoEPieceRun, expert_group_piece, routed_experts, trunk_piece
from modelslim_runners.pieces import linear_pieces, linear_weight_shapes, piece_bytes
from modelslim_runners.placement import LayerWisePlacement, Placement, move
from modelslim_core.errors import MemoryBudgetError
from modelslim_runners.budget import (ASSUMPTIONS_STORED, ASSUMPTIONS_STREAMED, ASSUMPTIONS_UNIT,
                                      STREAM_CODE_BYTES, MemoryBudget, calibrated_weights_need, gib, kind_of,
                                      linear_code_bytes, rewrites_weights, streamed_piece_need)
from modelslim_runners.report import RunSummary, log_memory_plan, unit_bytes
from modelslim_runners.run_report import write_quant_report
from modelslim_runners.resume import ResumePoint, ResumeStore
from modelslim_runners.spill import ActivationSpill
from modelslim_runners.split_pieces import piece_owners, receive_piece, send_piece, share_pattern_use
from modelslim_runners.unit_cache import UnitCache

logger = logging.getLogger(__name__)
#: Routed experts per piece of a calibrated MoE layer, whatever the budget (memory bounded without knowing it).
EXPERTS_PER_PIECE_ENV = "MSMODELSLIM_EXPERTS_PER_PIECE"
#: "1": every calibrated dense layer is processed as its attention piece then its MLP piece, whatever the budget.
DENSE_PIECES_ENV = "MSMODELSLIM_DENSE_PIECES"
#: Bytes of weights a streamed (data-free) stage reads between two resume points inside a unit (default 2 GiB:
#: a killed run redoes at most that much of a layer).
STREAM_CHECKPOINT_ENV = "MSMODELSLIM_STREAM_CHECKPOINT_BYTES"
#: `ResumePoint.piece["kind"]` of a resume point between two streamed pieces.
STREAMED_KIND = "streamed"
#: Where a resume point keeps the recorder's records (report statistics of the units already finished).
RECORDER_STATE_KEY = "_modelslim_recorder"


def stage_needs_data(stage: Stage) -> bool:
    return any(processor_class(config).needs_data(config) for config in stage.processors)


def accumulates_hessians(configs: Sequence[Any]) -> bool:
    """Whether some linear_quant (also inside groups) uses a data-driven weight method (GPTQ: an in x in
    float32 Hessian per linear, held for the whole calibration forward)."""
    from modelslim_core.processors.linear_quant import DATA_FREE_WEIGHT_METHODS  # noqa: PLC0415

    for config in configs:
        weight = getattr(getattr(config, "qconfig", None), "weight", None)
        if weight is not None and getattr(weight, "method", None) not in DATA_FREE_WEIGHT_METHODS:
            return True
        if accumulates_hessians(getattr(config, "configs", None) or []):
            return True
    return False


class _StatisticsComplete(Exception):
    """Raised by a hook to end a sample's forward once the running processor has recorded everything."""


class UnitPipeline:
    """Runs stages over a model with a given placement."""

    def __init__(self, context: RunContext, placement: Placement):
        self.context = context
        self.adapter = context.adapter
        self.placement = placement
        self._texts_by_dataset: dict[str, list[str]] = {}
        self._samples: dict[str, list[dict[str, torch.Tensor]]] = {}
        self.rank, self.world = rank_and_world()
        resumable = bool(context.fingerprint)
        self.store = ResumeStore(context.save_path, context.fingerprint, self.rank, self.world) if resumable else None
        self.summaries: list[RunSummary] = []
        self.spill = ActivationSpill.for_run(context.save_path, self.rank)
        self._piecewise = False
        self._moe_pieces = False
        self._data_processors = 0
        self._resume_piece: dict | None = None
        self._checkpointed = False
        self._budget = MemoryBudget(None, 0, "")
        self._activations = 0
        self._hessians = False
        self._rewrites = True
        #: Per stage, by a linear's name: bytes/element of its streamed quantized output (budget.linear_code_bytes).
        self._selected = lambda name: STREAM_CODE_BYTES
        self._cache: UnitCache | None = None
        self._stream_checkpoint_bytes = int(os.environ.get(STREAM_CHECKPOINT_ENV, "") or 2**31)
        #: Linear pieces this rank loaded and quantized itself (data-parallel streamed stages: split_pieces.py).
        self._own_pieces = 0
        #: Groups of routed experts this rank loaded and calibrated itself, and all groups of the stage (a
        #: data-parallel calibrated stage splits them across the ranks: moe_pieces.py).
        self.own_groups = 0
        self.split_groups = 0

    def run(self, stages: list[Stage]) -> None:
        try:
            self._run_stages(stages)
        finally:
            self.spill.cleanup()

    def _run_stages(self, stages: list[Stage]) -> None:
        point = self.store.load() if self.store else None
        if point is not None and point.stage in [s.name for s in stages]:
            stages = stages[[s.name for s in stages].index(point.stage):]  # earlier stages' results are in the state
            self.context.state = dict(point.context_state)
            self.context.recorder.restore(self.context.state.pop(RECORDER_STATE_KEY, None))
        else:
            point = None
        for stage in stages:  # read every dataset first: a bad dataset must fail before minutes of model loading
            if stage_needs_data(stage) and stage.samples is None:
                self._texts(stage.dataset or "")
        for stage in stages:
            self._resume_point = point if point is not None and point.stage == stage.name else None
            started = time.perf_counter()
            model = self.placement.load(self.adapter)
            logger.info("Model ready for stage %s in %.1f s.", stage.name, time.perf_counter() - started)
            self._run_stage(model, stage)
            del model

    def _texts(self, dataset: str) -> list[str]:
        if dataset not in self._texts_by_dataset:
            self._texts_by_dataset[dataset] = load_texts(dataset)
        return self._texts_by_dataset[dataset]

    def _calibration_samples(self, dataset: str) -> list[dict[str, torch.Tensor]]:
        if dataset not in self._samples:  # keyed by dataset: prior stages with their own data get their own
            mine = self._texts(dataset)[self.rank :: self.world]  # data parallel: every rank its share
            self._samples[dataset] = self.adapter.tokenize(mine)
        return self._samples[dataset]

    @torch.no_grad()
    def _capture(self, model: nn.Module, units: list[Unit], stage: Stage) -> Sequence[UnitInput] | None:
        if not stage_needs_data(stage):
            logger.info("Stage %s is data-free: no calibration forward is run.", stage.name)
            return None
        samples = stage.samples if stage.samples is not None else self._calibration_samples(stage.dataset or "")
        self.placement.prepare_prefix(model, units)
        try:
            captured = self.adapter.capture_unit_inputs(model, samples)
        finally:
            self.placement.finish_prefix(model, units)
        return self.spill.keep(move(item, self.placement.activation_device) for item in captured)

    def _start(self, model: nn.Module, units: list[Unit], stage: Stage, processors: list[Processor],
               savers: list[Saver]) -> tuple[int, Sequence[UnitInput] | None]:
        """First unit to process and its inputs: from scratch, or from the resume point."""
        point = self._resume_point
        for processor in processors:
            processor.pre_run(model)
        if point is None:
            for saver in savers:
                saver.pre_run(model)
            reused = self._reuse_cached_prefix(units, processors, savers)
            return reused if reused is not None else (0, self._capture(model, units, stage))
        for processor, state in zip(processors, point.processors, strict=True):
            processor.load_state_dict(state)
        for saver, state in zip(savers, point.savers, strict=True):
            saver.load_state_dict(state)
        if point.piece is not None:  # killed inside a unit processed in pieces: MoEPieceRun continues it
            self._resume_piece = {**point.piece, "processors": point.processors,
                                  "recorder": point.context_state.get(RECORDER_STATE_KEY)}
        return point.next_unit, point.inputs

    def _reuse_cached_prefix(self, units: list[Unit], processors: list[Processor],
                             savers: list[Saver]) -> tuple[int, Sequence[UnitInput] | None] | None:
        """Save the leading units the unit cache holds (unit_cache.py) and continue from the state after them:
        (first unit to process, its inputs), or None when the first unit is not cached."""
        count = self._cache.reusable_prefix() if self._cache is not None else 0
        if count == 0:
            return None
        started = time.perf_counter()
        for unit in units[:count]:
            unit_started = time.perf_counter()
            if savers:  # data parallel: rank 0 saves, the other ranks only continue from the state below
                cached = Unit(unit.name, self._cache.load_unit(unit.index), unit.index)
                for saver in savers:
                    saver.save_unit(cached)
            self.summaries[-1].add(unit.name, time.perf_counter() - unit_started, rss_bytes())
        state = self._cache.load_state(count - 1)
        for processor, processor_state in zip(processors, state["processors"], strict=True):
            processor.load_state_dict(processor_state)
        self.context.state = dict(state["context_state"])
        self.context.recorder.restore(self.context.state.pop(RECORDER_STATE_KEY, None))
        torch.set_rng_state(state["rng"])
        logger.info("Reused the first %d of %d units from the unit cache %s (same inputs and config) in %.1f s.",
                    count, len(units), self._cache.root, time.perf_counter() - started)
        inputs = state["inputs"]
        return count, None if inputs is None else self.spill.keep(inputs)

    def _cache_state(self, unit: Unit, inputs: Sequence[UnitInput] | None, processors: list[Processor]) -> None:
        """Commit the unit's cache entry with what the next unit starts from."""
        if self._cache is not None:
            context_state = {**self.context.state, RECORDER_STATE_KEY: self.context.recorder.snapshot()}
            self._cache.store_state(unit.index, inputs, [p.state_dict() for p in processors], context_state)

    def _checkpoint(self, stage: Stage, next_unit: int, inputs, processors: list[Processor], savers: list[Saver],
                    piece: dict | None = None) -> None:
        if self.store is not None and stage.savers:  # every rank: each keeps its own inputs; rank 0 the savers'
            context_state = {**self.context.state, RECORDER_STATE_KEY: self.context.recorder.snapshot()}
            self.store.save(ResumePoint(stage.name, next_unit, inputs, [p.state_dict() for p in processors],
                                        [s.state_dict() for s in savers], context_state, piece))
            self._checkpointed = True

    def _run_stage(self, model: nn.Module, stage: Stage) -> None:
        if isinstance(self.placement, LayerWisePlacement):
            self.placement.stored_weights = all(processor_class(c).handles_stored_weights(c) for c in stage.processors)
        storage, compute = self.placement.unit_storage_dtype, self.context.compute_dtype
        if storage == compute:
            self._run_stage_stored(model, stage)
            return
        logger.info("Weights are held in %s during calibration; each module computes in %s while it runs.",
                    storage, compute)
        with compute_in(compute):
            self._run_stage_stored(model, stage)

    def _run_stage_stored(self, model: nn.Module, stage: Stage) -> None:
        processors = [build_processor(config, self.context) for config in stage.processors]
        savers = [build_saver(config, self.context) for config in stage.savers] if self.rank == 0 else []
        summary = RunSummary(stage.name, self.placement.device)
        self.summaries.append(summary)
        self._checkpointed = False
        self._stage = stage
        self.own_groups = self.split_groups = 0
        self._piecewise = self._streams_pieces(stage, processors)
        self._moe_pieces = self._calibrates_in_pieces(stage, processors)
        self._data_processors = sum(type(p).needs_data(p.config) for p in processors)
        self._hessians = accumulates_hessians(stage.processors)
        self._rewrites = rewrites_weights(stage.processors)
        self._selected = linear_code_bytes(stage.processors, getattr(self.adapter, "name_aliases", None))
        try:
            units = self.adapter.units(model)
            check_layer_selections(self.adapter, units, stage.processors)
            check_attention_selections(self.adapter, units, stage.processors)
            self._cache = None if self._resume_point is not None else UnitCache.for_stage(
                self.context, model, units, stage, self.world, self.rank)
            start, inputs = self._start(model, units, stage, processors, savers)
            self._budget = self._plan_memory(model, units, nested_tensor_bytes(inputs or []))
            for unit in self._progress(units[start:], stage):
                started = time.perf_counter()
                inputs = self._run_unit(unit, processors, savers, inputs, is_last=unit is units[-1])
                self._cache_state(unit, inputs, processors)
                summary.add(unit.name, time.perf_counter() - started, rss_bytes())
                if self.rank == 0 or not (self._piecewise or self.split_groups):  # split: rank 0 has every piece
                    summary.note(self.adapter.unit_notes(unit))  # e.g. MoE routing counts (kept past release)
                self.adapter.record_unit(unit, self.context.recorder)
                if unit is not units[-1]:
                    self._checkpoint(stage, unit.index + 1, inputs, processors, savers)
            for line in self._budget.report_lines(limit=8):
                logger.info("Memory per piece (largest plans): %s.", line)
            summary.memory = self._budget.as_json()
            if (self._piecewise or self.split_groups) and self.world > 1:
                share_pattern_use(processors)  # each rank matched patterns on its own pieces only
            if self.split_groups and self.world > 1:
                logger.info("Routed experts split across %d ranks: rank %d loaded and calibrated %d of the %d groups; "
                            "rank 0 saved them all.", self.world, self.rank, self.own_groups, self.split_groups)
            if self._piecewise and self.world > 1:
                logger.info("Pieces split across %d ranks: rank %d loaded and quantized %d of the %d linears; rank 0 "
                            "saved them all.", self.world, self.rank, self._own_pieces,
                            sum(bool(p.subtrees) for unit in units for p in linear_pieces(unit)))
            for processor in processors:
                processor.post_run()
            for saver in savers:
                saver.save_remaining(model, [unit.name for unit in units])
            if stage.savers:
                self._write_observations()  # before the savers commit: the description is written last
            for saver in savers:
                saver.finish()
        except BaseException:
            if self._checkpointed or self._resume_point is not None:
                logger.error("Run interrupted; run the same command again to resume after the last finished unit.")
            else:
                for saver in savers:
                    saver.abort()
            raise
        if savers and self.store is not None:
            self.store.clear()
        summary.log()

    def _write_observations(self) -> None:
        """quant_report.json and (under --debug) debug_info/, with every rank's records gathered on rank 0."""
        recorder = self.context.recorder
        recorder.gather()  # a collective: every rank reaches this point of a stage with savers
        if self.rank != 0:
            return
        report = write_quant_report(self.context, self.summaries, type(self.placement).__name__)
        logger.info("Run report written to %s.", report)
        if recorder.debug_enabled:
            logger.info("Debug info written to %s.", write_debug_info(recorder.debug_records, recorder.debug_dir))

    @staticmethod
    def _progress(units: list[Unit], stage: Stage):
        """A progress bar with ETA on a terminal; plain log lines otherwise."""
        if sys.stderr.isatty():
            yield from tqdm(units, desc=f"quantizing ({stage.name})", unit="layer")
            return
        started = time.perf_counter()
        for index, unit in enumerate(units):
            yield unit
            elapsed = time.perf_counter() - started
            eta = elapsed / (index + 1) * (len(units) - index - 1)
            logger.info("%s done (%d/%d, %.1f s elapsed, ETA %.1f s).", unit.name, index + 1, len(units), elapsed, eta)

    def _streams_pieces(self, stage: Stage, processors: list[Processor]) -> bool:
        """Data-free stages whose processors treat each linear on its own run linear by linear: one linear's
        weights (in the checkpoint's dtype) in memory at a time, whatever the layer's size."""
        return (not stage_needs_data(stage) and self.placement.loads_pieces
                and all(type(p).handles_pieces(p.config) for p in processors))

    def _code_bytes(self, piece: Unit) -> float | None:
        """Bytes per element of the streamed piece's quantized linear; None when no processor of this stage
        selects it (excluded or kept float by the adapter: saved as loaded)."""
        sizes = [size for site in self.adapter.linear_sites(piece) if (size := self._selected(site.name)) is not None]
        return max(sizes, default=None)

    def _calibrates_in_pieces(self, stage: Stage, processors: list[Processor]) -> bool:
        """Calibrated stages whose processors all accept calibrated pieces may process a layer that does not fit
        the budget in pieces: a MoE layer as its trunk plus groups of routed experts (moe_pieces.py), a dense one
        as its attention block then its MLP (dense_pieces.py). Data-parallel ranks walk the same pieces in the
        same order over their own samples, so each piece's statistics are reduced like a whole unit's."""
        return (stage_needs_data(stage) and self.placement.loads_pieces
                and all(type(p).handles_calibrated_pieces(p.config) for p in processors))

    def _piece_need(self, piece: Unit) -> int:
        """Bytes above the baseline a calibrated MoE piece needs, both in float32 weights 3x: an expert group
        (float or calibrating, quantized, dequantized simulation) plus the experts' inputs it is calibrated on and
        the outputs it adds up (at most the unit's activations each; with several ranks, the owner of a group
        calibrates it over every rank's samples: measured on DeepSeek-V3 dimensions, 64 experts in groups of
        ~6, w8a8 practice, weights alone were planned 2% below the group's peak); the trunk (calibrating, the copy of its
        calibration state its outputs are replayed from, dequantized simulation) plus one capture of the
        experts' inputs per calibrating processor and the final one (with several ranks, every rank's: they are
        gathered), and the unit's inputs and outputs."""
        if piece.subtrees:
            return self._piece_weights_need(piece) + 2 * self.world * self._activations
        # with several ranks the experts' inputs are gathered from every rank (moe_pieces.py): world x this rank's
        return (self._piece_weights_need(piece)
                + ((self._data_processors + 1) * self.world + 2) * self._activations)

    def _piece_weights_need(self, piece: Unit) -> int:
        return self._weights_need(piece, piece_bytes(piece, self._compute_element()))

    def _piece_need_with_activations(self, piece: Unit) -> int:
        """A piece that holds the unit's activations while it runs (a MoE trunk; either piece of a dense layer:
        the attention outputs recorded per calibrating processor and the final ones, inputs and outputs)."""
        return self._piece_weights_need(piece) + (self._data_processors + 3) * self._activations

    def _weights_need(self, piece: Unit, compute_bytes: int) -> int:
        """Weights of a unit or piece while it is calibrated (budget.calibrated_weights_need)."""
        storage_element = torch.empty((), dtype=self.placement.unit_storage_dtype).element_size()
        return calibrated_weights_need(compute_bytes, self._compute_element(), storage_element,
                                       linear_weight_shapes(piece), self._hessians, self._rewrites)

    def _compute_element(self) -> int:
        return torch.empty((), dtype=self.context.compute_dtype).element_size()

    def _experts_per_group(self, unit: Unit) -> int | None:
        """Routed experts per piece of a calibrated MoE unit that does not fit the budget whole (None: whole)."""
        found = routed_experts(unit) if self._moe_pieces else None
        if found is None:
            return None
        path, moe = found
        forced = os.environ.get(EXPERTS_PER_PIECE_ENV, "")
        if forced.isdigit() and int(forced) > 0:
            return min(len(moe), int(forced))
        if self._budget.limit is None:
            return None
        room = self._budget.limit - self._budget.baseline
        if self._unit_need(unit, self._activations) <= room:
            return None
        trunk = self._piece_need(trunk_piece(unit, path))
        expert = self._piece_need(expert_group_piece(unit, path, range(1)))
        if trunk + expert > room:
            raise MemoryBudgetError(
                f"{unit.name} does not fit the memory budget of {gib(self._budget.limit)} even in pieces: its trunk "
                f"(attention, router, shared experts) needs ~{gib(trunk)} and one routed expert ~{gib(expert)} on "
                f"top of the process baseline of {gib(self._budget.baseline)}.", self._budget.hint)
        return min(len(moe), (room - trunk) // expert)

    def _dense_split(self, unit: Unit) -> DenseSplit | None:
        """The attention and MLP pieces of a calibrated dense unit that does not fit the budget whole (or of every
        dense unit when MSMODELSLIM_DENSE_PIECES=1); None: the unit is processed whole."""
        if not self._moe_pieces or routed_experts(unit) is not None:
            return None
        split = dense_split(unit)
        if split is None or os.environ.get(DENSE_PIECES_ENV, "") == "1":
            return split
        if self._budget.limit is None:
            return None
        room = self._budget.limit - self._budget.baseline
        return split if self._unit_need(unit, self._activations) > room else None

    def _unit_plan(self, unit: Unit) -> tuple[int, str]:
        """(bytes needed above the baseline, label) of the largest piece a unit is processed in."""
        split = self._dense_split(unit)
        if split is not None:
            return max((self._piece_need_with_activations(piece), f"{unit.name}.{piece.label}")
                       for piece in (split.attention, split.mlp))
        group = self._experts_per_group(unit)
        if group is None:
            return self._unit_need(unit, self._activations), unit.name
        path, _ = routed_experts(unit)
        need = self._piece_need(trunk_piece(unit, path)) + self._piece_need(expert_group_piece(unit, path, range(group)))
        return need, f"{unit.name} (trunk + {group} routed experts)"

    def enter_calibrated_piece(self, piece: Unit, need: int) -> None:
        self._budget.enter(f"{piece.name}.{piece.label}", need)
        self.placement.enter(piece, self.placement.unit_storage_dtype)

    def leave_calibrated_piece(self, piece: Unit, need: int, kind: str | None = None, release: bool = True) -> None:
        """Record the piece's measured peak; release it unless it stays (`release=False`: a dense layer's norms,
        still needed by the MLP piece's forward)."""
        if release:
            self.placement.leave(piece)
        self._budget.leave(kind or (kind_of(piece.label) if not piece.subtrees else "routed experts (group)"), need)

    def _storage_element(self) -> int:
        return torch.empty((), dtype=self.placement.storage_dtype).element_size()

    def _unit_need(self, unit: Unit, activations: int) -> int:
        return self._weights_need(unit, unit_bytes(unit, self.context.compute_dtype)) + 2 * activations

    def _plan_memory(self, model: nn.Module, units: list[Unit], activations: int) -> MemoryBudget:
        """Log the plan (per piece, with the measured baseline) and refuse up front a piece that cannot fit."""
        layer_wise = isinstance(self.placement, LayerWisePlacement)
        if not layer_wise:  # layer-wise runs log the budget's plan per piece below (what they are checked against)
            log_memory_plan(model, units, self.context.compute_dtype, activations, layer_wise)
        if self._piecewise:
            budget = MemoryBudget.start(self.context.max_memory, ASSUMPTIONS_STREAMED)
            element = self._storage_element()
            need, label = max((streamed_piece_need(piece, element, self._code_bytes(piece)), f"{unit.name}.{piece.label}")
                              for unit in units for piece in linear_pieces(unit))
            budget.log_plan(f"streamed linear by linear in {self.placement.storage_dtype}", label, need)
        else:
            stored = self.placement.unit_storage_dtype != self.context.compute_dtype
            budget = MemoryBudget.start(self.context.max_memory if layer_wise else None,
                                        ASSUMPTIONS_STORED if stored else ASSUMPTIONS_UNIT,
                                        "raise --max_memory (or free memory on the host), or use a data-free "
                                        "scheme (dynamic activations, minmax weights), which streams one linear "
                                        "at a time.")
            self._budget, self._activations = budget, activations
            need, label = max(self._unit_plan(unit) for unit in units)
            budget.log_plan(f"whole units in {self.placement.unit_storage_dtype}", label, need)
        self._activations = activations
        budget.check_plan(label, need)
        return budget

    def _run_pieces(self, unit: Unit, processors: list[Processor], savers: list[Saver], first: int = 0) -> None:
        """Stream the unit piece by piece from piece `first` (a resumed run: the pieces before it are saved); with
        several ranks each piece is loaded and quantized by its owner only and saved by rank 0 (split_pieces.py).
        A resume point is committed after every STREAM_CHECKPOINT_ENV bytes of weights, counted from the pieces'
        shapes, so every rank commits at the same piece."""
        element = self._storage_element()
        pieces = linear_pieces(unit)
        owners = piece_owners(pieces, unit.index, self.world)
        since_checkpoint = 0
        for index in range(first, len(pieces)):
            piece, owner = pieces[index], owners[index]
            since_checkpoint += piece_bytes(piece, element)
            if owner == self.rank or self.rank == 0:  # else another rank's piece, saved by rank 0
                self._stream_piece(unit, piece, owner, processors, savers, element)
            if since_checkpoint >= self._stream_checkpoint_bytes and index + 1 < len(pieces):
                since_checkpoint = 0
                self._checkpoint(self._stage, unit.index, None, processors, savers,
                                 piece={"kind": STREAMED_KIND, "next_piece": index + 1})

    def _stream_piece(self, unit: Unit, piece: Unit, owner: int, processors: list[Processor], savers: list[Saver],
                      element: int) -> None:
        label, need = f"{unit.name}.{piece.label}", streamed_piece_need(piece, element, self._code_bytes(piece))
        self._budget.enter(label, need)
        if owner == self.rank:
            self._own_pieces += bool(piece.subtrees)
            self.placement.enter(piece)
            with working_alone():
                for processor in processors:
                    processor.preprocess(piece)
                    processor.postprocess(piece)
            if owner != 0:
                send_piece(piece)
        else:
            receive_piece(piece, owner, self.placement.device)
        for saver in savers:
            saver.save_unit(piece)
        self.placement.leave(piece)
        self._budget.leave(piece.label, need)

    @torch.no_grad()
    def _run_unit(
        self,
        unit: Unit,
        processors: list[Processor],
        savers: list[Saver],
        inputs: Sequence[UnitInput] | None,
        is_last: bool,
    ) -> Sequence[UnitInput] | None:
        resume, self._resume_piece = self._resume_piece, None
        if inputs is None and self._piecewise:
            if self._cache is not None:
                self._cache.skip()
            first = resume["next_piece"] if resume is not None and resume.get("kind") == STREAMED_KIND else 0
            if first:
                logger.info("%s: resuming at piece %d of %d.", unit.name, first, len(linear_pieces(unit)))
            self._run_pieces(unit, processors, savers, first)
            return None
        if resume is not None and resume.get("kind") == RESUME_KIND or resume is None and inputs is not None:
            split = self._dense_split(unit) if resume is None else dense_split(unit)
            if split is not None:
                return self._run_dense_pieces(unit, split, processors, savers, inputs, is_last, resume)
        # A resumed unit keeps the group boundaries of the killed run, whatever the budget is now.
        group = resume["group_size"] if resume else self._experts_per_group(unit) if inputs is not None else None
        if group is not None:
            path, moe = routed_experts(unit)
            logger.info("%s is processed in pieces: its trunk, then %d routed experts at a time.", unit.name, group)

            if self._cache is not None:
                self._cache.skip()

            def checkpoint(progress: dict) -> None:
                self._checkpoint(self._stage, unit.index, inputs, processors, savers, piece=progress)

            return MoEPieceRun(self, unit, path, processors, savers, inputs, is_last, group, self._piece_need,
                               checkpoint, resume).run()
        need = self._unit_need(unit, self._activations)
        self._budget.enter(unit.name, need)
        self.placement.enter(unit)
        outputs = None
        for index, processor in enumerate(processors):
            processor.preprocess(unit)
            if inputs is not None and processor.needs_forward(unit):
                discarded = is_last or any(type(p).needs_data(p.config) for p in processors[index + 1 :])
                stop_at = processor.forward_needs_only(unit) if discarded else []
                outputs = self._forward_until(unit, inputs, stop_at) if stop_at else self._forward(unit, inputs)
            processor.postprocess(unit)
            if processor.outputs_stale(unit):
                outputs = None  # recomputed below from the unit as it is now
        if inputs is not None and not is_last and outputs is None:
            outputs = self._forward(unit, inputs)
        for saver in savers:
            saver.save_unit(unit)
        release_dequantized(unit.module)  # model-wise keeps the unit: its cached float copies go now
        if self._cache is not None:
            self._cache.store_unit(unit.index, unit.module)
        self.placement.leave(unit)
        self._budget.leave("(whole unit)", need)
        if inputs is None or is_last:
            return None
        return self.spill.keep(self.adapter.next_unit_input(out, inp) for out, inp in zip(outputs, inputs))

    def _run_dense_pieces(self, unit: Unit, split: DenseSplit, processors: list[Processor], savers: list[Saver],
                          inputs: Sequence[UnitInput], is_last: bool, resume: dict | None) -> Sequence[UnitInput] | None:
        logger.info("%s is processed in pieces: its attention block, then its MLP.", unit.name)
        if self._cache is not None:
            self._cache.skip()

        def checkpoint(progress: dict) -> None:
            self._checkpoint(self._stage, unit.index, inputs, processors, savers, piece=progress)

        return DensePieceRun(self, unit, split, processors, savers, inputs, is_last, self._piece_need_with_activations,
                             checkpoint, resume).run()

    def _forward_until(self, unit: Unit, inputs: Sequence[UnitInput], modules: list[nn.Module]) -> None:
        """Run each sample only until every one of `modules` has been called (their inputs are all the running
        processor records; a `records_in_forward` module's forward has returned), skipping the rest of the
        unit: no outputs (the runner recomputes them if needed)."""
        device = self.placement.device
        wanted = {id(module) for module in modules}
        pending: set[int] = set()

        def reached(module: nn.Module, *_ignored: Any) -> None:  # runs after the processor's own pre-hooks
            pending.discard(id(module))
            if not pending:
                raise _StatisticsComplete

        handles = [module.register_forward_hook(reached) if getattr(module, "records_in_forward", False)
                   else module.register_forward_pre_hook(reached) for module in {id(m): m for m in modules}.values()]
        try:
            for item in inputs:
                pending.update(wanted)
                try:
                    unit.module(*move(item.args, device), **move(item.kwargs, device))
                except _StatisticsComplete:
                    continue
        finally:
            for handle in handles:
                handle.remove()
        return None

    def _forward(self, unit: Unit, inputs: Sequence[UnitInput]) -> Sequence[Any]:
        device = self.placement.device
        back = self.placement.activation_device

        def outputs() -> Iterator[Any]:
            for item in inputs:
                output = unit.module(*move(item.args, device), **move(item.kwargs, device))
                yield move(self.adapter.unit_output(output), back)

        return self.spill.keep(outputs())
