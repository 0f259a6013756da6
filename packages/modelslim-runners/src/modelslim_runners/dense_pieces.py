"""Calibrated stages on a dense decoder layer too large for the memory budget: the layer in two pieces.

The cut is at the residual after attention. The attention piece is the layer without `post_attention_layernorm`
and `mlp` (input norm, attention, its norms); the MLP piece is `post_attention_layernorm` and `mlp`. Every
smoothing subgraph of a dense layer lies inside one of them (input norm -> q/k/v and v -> o in the attention
piece, post-attention norm -> gate/up and up -> down in the MLP piece), and so do GPTQ's shared Hessians
(q/k/v; gate/up) and the KV-cache statistics. Processors that relate anything across the cut (flex smoothing,
AWQ's block replays, rotations) do not accept calibrated pieces (`Processor.handles_calibrated_pieces`), and a
layer they process stays whole.

The attention piece is loaded first. Each processor in turn preprocesses it, runs the layer over the calibration
inputs only as far as the attention (a hook records the attention's output per sample and ends the sample's
forward there; the MLP piece is not loaded) and postprocesses it. When the last calibrating processor leaves
the attention's outputs stale (GPTQ, a KV-cache final tap), the final attention is run once more. The attention's
linears are saved (they come first in module order) and released. Then the MLP piece is loaded, and each
processor preprocesses it, runs the layer's own forward with the attention replaced by the outputs recorded for
that processor (the residual adds, the norm and the MLP are the layer's code, as in a whole-layer run),
postprocesses it. The layer's outputs are those of the last calibrating processor's forward, or, when the layer is
stale, a replay of the final MLP over the final attention's outputs: exactly what a whole-layer run feeds the next
layer. The rest of the layer (MLP linears, then the norms) is saved in module order, so the checkpoint is
byte-identical to a whole-layer run.

A run killed after the attention piece resumes with the MLP piece: the checkpoint keeps the recorded attention
outputs and the attention tensors still held (norms, possibly smoothed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from modelslim_core.models.moe import PerExpertMoE
from modelslim_core.runtime.processor import Processor
from modelslim_core.runtime.saver import Saver
from modelslim_core.runtime.unit import Unit, UnitInput
from modelslim_runners.pieces import forward_replaced, linear_pieces, release_piece

logger = logging.getLogger(__name__)

#: Children of a decoder layer the cut knows: the attention block's, then the MLP block's.
ATTENTION_CHILDREN = ("input_layernorm", "self_attn")
MLP_CHILDREN = ("post_attention_layernorm", "mlp")
#: Marks a resume point taken inside a dense layer (the MoE run's points carry `group_size` instead).
RESUME_KIND = "dense"


@dataclass
class DenseSplit:
    attention: Unit
    mlp: Unit


def dense_split(unit: Unit) -> DenseSplit | None:
    """The unit's attention and MLP pieces when it is a pre-norm decoder layer of exactly the known children
    (input_layernorm, self_attn, post_attention_layernorm, mlp; no parameter of its own, no routed experts);
    None for any other layout, which is processed whole rather than cut where the forward's order is unknown."""
    module = unit.module
    children = dict(module.named_children())
    if set(children) != {*ATTENTION_CHILDREN, *MLP_CHILDREN} or any(True for _ in module.parameters(recurse=False)):
        return None
    if any(isinstance(m, PerExpertMoE) for m in module.modules()):
        return None
    in_mlp = tuple(f"{child}." for child in MLP_CHILDREN)
    attention_paths = [path for path, _ in module.named_modules()
                       if path not in MLP_CHILDREN and not path.startswith(in_mlp)]
    return DenseSplit(Unit(unit.name, module, unit.index, parts=frozenset(attention_paths), label="attention"),
                      Unit(unit.name, module, unit.index, subtrees=MLP_CHILDREN, label="mlp"))


def save_order(unit: Unit, mlp: Unit) -> tuple[list[Unit], list[Unit]]:
    """The unit's linear-by-linear save pieces (a whole-unit save's order), split before the first one that
    touches the MLP piece: what is saved after the attention piece, and what is saved at the end."""
    pieces = linear_pieces(unit)
    for index, piece in enumerate(pieces):
        if any(mlp.covers(path) for path in (*piece.subtrees, *(piece.parts or ()))):
            return pieces[:index], pieces[index:]
    return pieces, []


class _AttentionDone(Exception):
    """Raised by the recording hook: the rest of the layer (the MLP piece) is not run in the attention phase."""


def recorded_outputs(outputs: Iterator[torch.Tensor], arity: int, device: torch.device) -> Callable[..., Any]:
    """A stand-in forward for the attention: the recorded outputs, one per call, in the tuple shape the layer
    unpacks (`arity` 0: a tensor; n: a tuple of n, the hidden states first)."""

    def recorded(*args: Any, **kwargs: Any) -> Any:
        output = next(outputs).to(device)
        return (output, *([None] * (arity - 1))) if arity else output

    return recorded


class DensePieceRun:
    """One calibrated dense unit, processed as its attention piece then its MLP piece (module docstring)."""

    def __init__(self, pipeline: Any, unit: Unit, split: DenseSplit, processors: list[Processor],
                 savers: list[Saver], inputs: Sequence[UnitInput], is_last: bool, needs: Callable[[Unit], int],
                 checkpoint: Callable[[dict], None] | None = None, resume: dict | None = None):
        self.pipeline = pipeline
        self.unit = unit
        self.split = split
        self.attention: nn.Module = unit.module.get_submodule("self_attn")
        self.processors = processors
        self.savers = savers
        self.inputs = inputs
        self.outputs_needed = not is_last
        self.needs = needs
        self.data = [type(p).needs_data(p.config) for p in processors]
        #: The last processor that calibrates: its forward's outputs are the unit's, unless they are stale.
        self.last = max(i for i, d in enumerate(self.data) if d)
        self.checkpoint = checkpoint
        self.resume = resume
        self.arity = 0  # the attention's output: 0 a tensor, n a tuple of n (the hidden states first)

    # --- forwards ---------------------------------------------------------------------------------------
    def _run(self, sample: UnitInput) -> Any:
        from modelslim_runners.placement import move

        device = self.pipeline.placement.device
        return self.unit.module(*move(sample.args, device), **move(sample.kwargs, device))

    def _capture(self) -> Sequence[torch.Tensor]:
        """Run each sample up to the end of the attention; its outputs (hidden states), in sample order."""
        back = self.pipeline.placement.activation_device
        seen: list[torch.Tensor] = []

        def record(_module: nn.Module, _args: Any, output: Any) -> None:
            is_tuple = isinstance(output, (tuple, list))
            self.arity = len(output) if is_tuple else 0
            seen.append((output[0] if is_tuple else output).detach().to(back))
            raise _AttentionDone

        handle = self.attention.register_forward_hook(record)
        try:
            for sample in self.inputs:
                try:
                    self._run(sample)
                except _AttentionDone:
                    continue
        finally:
            handle.remove()
        return self.pipeline.spill.keep(seen)

    def _mlp_forward(self, attention_outputs: Sequence[torch.Tensor], keep: bool) -> Sequence[Any] | None:
        """The layer's forward with the attention's recorded outputs in place; its outputs if `keep`."""
        back = self.pipeline.placement.activation_device
        adapter = self.pipeline.adapter
        stand_in = recorded_outputs(iter(attention_outputs), self.arity, self.pipeline.placement.device)
        with forward_replaced(self.attention, stand_in):
            if not keep:
                for sample in self.inputs:
                    self._run(sample)
                return None
            return self.pipeline.spill.keep([adapter.unit_output(self._run(sample)).to(back)
                                             for sample in self.inputs])

    # --- the unit -----------------------------------------------------------------------------------------
    def run(self) -> Sequence[UnitInput] | None:
        pipeline, split = self.pipeline, self.split
        before, rest = save_order(self.unit, split.mlp)
        attention_need = self.needs(split.attention)
        if self.resume is None:
            pipeline.enter_calibrated_piece(split.attention, attention_need)
            captured, final, stale = self._attention_phase()
            self._save(before)
            for piece in before:
                release_piece(piece)
            self._checkpoint(captured, final, stale)
        else:
            pipeline.enter_calibrated_piece(split.attention, attention_need, load=False)
            captured, final, stale = self._restore(self.resume)
        mlp_need = self.needs(split.mlp)
        pipeline.enter_calibrated_piece(split.mlp, mlp_need)
        outputs = self._mlp_phase(captured, final, stale)
        self._save(rest)
        pipeline.leave_calibrated_piece(split.mlp, mlp_need, kind="mlp")
        self.unit.module.to("meta")  # the attention piece's norms and whatever processors put in its place
        pipeline.leave_calibrated_piece(split.attention, attention_need, kind="attention")
        if outputs is None:
            return None
        return pipeline.spill.keep(pipeline.adapter.next_unit_input(out, inp) for out, inp in zip(outputs, self.inputs))

    def _attention_phase(self) -> tuple[dict[int, Sequence[torch.Tensor]], Sequence[torch.Tensor] | None, bool]:
        """(attention outputs per calibrating processor, the final attention's outputs, whether they differ)."""
        piece = self.split.attention
        captured: dict[int, Sequence[torch.Tensor]] = {}
        stale = False
        for index, processor in enumerate(self.processors):
            processor.preprocess(piece)
            if self.data[index]:
                captured[index] = self._capture()
            processor.postprocess(piece)
            stale |= index >= self.last and processor.outputs_stale(piece)
        final = self._capture() if stale and self.outputs_needed else None
        return captured, final, stale

    def _mlp_phase(self, captured: dict[int, Sequence[torch.Tensor]], final: Sequence[torch.Tensor] | None,
                   attention_stale: bool) -> Sequence[Any] | None:
        piece = self.split.mlp
        outputs = None
        stale = attention_stale
        for index, processor in enumerate(self.processors):
            processor.preprocess(piece)
            makes_outputs = index == self.last and self.outputs_needed and not stale
            if self.data[index] and (processor.needs_forward(piece) or makes_outputs):
                kept = self._mlp_forward(captured[index], keep=makes_outputs)
                outputs = kept if makes_outputs else outputs
            processor.postprocess(piece)
            stale |= index >= self.last and processor.outputs_stale(piece)
        if not self.outputs_needed:
            return None
        if stale:  # the final MLP over the final attention's outputs (the last calibrating ones if still valid)
            outputs = self._mlp_forward(final if final is not None else captured[self.last], keep=True)
        return outputs

    # --- resume ---------------------------------------------------------------------------------------------
    def _held_tensors(self) -> dict[str, torch.Tensor]:
        """The unit's tensors still in memory after the attention's linears were released (norms, buffers)."""
        module = self.unit.module
        held = {name: t.detach() for name, t in module.named_parameters(remove_duplicate=False) if not t.is_meta}
        held.update({f"buffer:{name}": b for name, b in module.named_buffers(remove_duplicate=False) if not b.is_meta})
        return held

    def _checkpoint(self, captured: dict[int, Sequence[torch.Tensor]], final: Sequence[torch.Tensor] | None,
                    stale: bool) -> None:
        if self.checkpoint is None:
            return
        self.checkpoint({"kind": RESUME_KIND, "next_group": 1, "captured": {i: list(c) for i, c in captured.items()},
                         "final": None if final is None else list(final), "stale": stale, "arity": self.arity,
                         "held": self._held_tensors()})

    def _restore(self, state: dict) -> tuple[dict[int, Sequence[torch.Tensor]], Sequence[torch.Tensor] | None, bool]:
        """Continue a run killed after the attention piece: its held tensors back in place (processors, savers
        and the recorder were restored by the pipeline), its recorded attention outputs."""
        module = self.unit.module
        device = self.pipeline.placement.device
        for name, tensor in state["held"].items():
            is_buffer = name.startswith("buffer:")
            owner_name, _, attr = name.removeprefix("buffer:").rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            if is_buffer:
                owner._buffers[attr] = tensor.to(device)
            else:
                owner._parameters[attr] = nn.Parameter(tensor.to(device), requires_grad=False)
        self.arity = state["arity"]
        logger.info("%s: resuming at its MLP piece (the attention piece was finished and saved).", self.unit.name)
        keep = self.pipeline.spill.keep
        captured = {int(i): keep(c) for i, c in state["captured"].items()}
        return captured, None if state["final"] is None else keep(state["final"]), state["stale"]

    def _save(self, pieces: list[Unit]) -> None:
        for piece in pieces:
            for saver in self.savers:
                saver.save_unit(piece)
