"""The VLM service's layer-wise pipeline: encoder towers, then decoder layers on the merged stream.

The whole model stays in host memory (as the reference does for VLMs: encoders, embeddings and the LM head
are needed by the capture forward, and towers are small next to the language model); each unit moves to
the compute device while it is processed. A tower unit is forwarded only when a processor asks for it, on
exactly the calls the model made to it. When a processor has changed a tower (calibrated or replaced a
linear), the first layer's inputs are captured again after the last tower, so the decoder layers see the
features of the tower as it will be served; otherwise the first capture is already exact.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from modelslim_core.runtime.processor import Processor
from modelslim_core.runtime.runner import Stage
from modelslim_core.runtime.saver import Saver
from modelslim_core.runtime.unit import Unit, UnitInput, is_linear_slot
from modelslim_runners.pipeline import UnitPipeline
from modelslim_runners.placement import Placement, move
from modelslim_vlm.models.base import VlmAdapter
from modelslim_vlm.models.sample_input import VlmSampleInput

logger = logging.getLogger(__name__)


def _move_outside(module: nn.Module, prefix: str, skip: set[str], device: torch.device) -> None:
    """Move the parameters and buffers of `module`'s subtree to `device`, except the subtrees named in `skip`."""
    if prefix in skip:
        return
    for _, param in module.named_parameters(recurse=False):
        param.data = param.data.to(device)
    for name, buffer in module.named_buffers(recurse=False):
        module._buffers[name] = buffer.to(device)
    for name, child in module.named_children():
        _move_outside(child, f"{prefix}.{name}" if prefix else name, skip, device)


class HostModelPlacement(Placement):
    """The whole model in host memory; the unit being processed (and the capture prefix) on the device."""

    @property
    def activation_device(self) -> torch.device:
        return torch.device("cpu")

    def load(self, adapter) -> nn.Module:
        return adapter.load_model(self.context.compute_dtype)

    def prepare_prefix(self, model: nn.Module, units: list[Unit]) -> None:
        _move_outside(model, "", {u.name for u in units if not self.context.adapter.is_tower(u)}, self.device)

    def finish_prefix(self, model: nn.Module, units: list[Unit]) -> None:
        _move_outside(model, "", set(), torch.device("cpu"))

    def enter(self, unit: Unit) -> None:
        unit.module.to(self.device)

    def leave(self, unit: Unit) -> None:
        super().leave(unit)  # float copies of quantized weights are dropped, not moved
        unit.module.to("cpu")


def _replaced_linears(unit: Unit) -> bool:
    return any(is_linear_slot(m) and not isinstance(m, nn.Linear) for m in unit.module.modules())


class VlmUnitPipeline(UnitPipeline):
    """UnitPipeline whose tower units run on their recorded calls and hand over through a fresh capture."""

    adapter: VlmAdapter

    def __init__(self, context, placement: Placement):
        super().__init__(context, placement)
        self._model: nn.Module | None = None
        self._units: list[Unit] = []
        self._stage: Stage | None = None
        self._towers_changed = False

    def _capture(self, model: nn.Module, units: list[Unit], stage: Stage) -> list[UnitInput] | None:
        self._model, self._units, self._stage, self._towers_changed = model, units, stage, False
        return super()._capture(model, units, stage)

    def _forward_tower(self, unit: Unit, inputs: list[VlmSampleInput]) -> None:
        """Every recorded call of this tower (calibration observers see exactly what the model fed it)."""
        device = self.placement.device
        for item in inputs:
            for call in item.tower_calls.get(unit.name, []):
                unit.module(*move(call.args, device), **move(call.kwargs, device))

    def _run_unit(self, unit: Unit, processors: list[Processor], savers: list[Saver],
                  inputs: list[UnitInput] | None, is_last: bool, **kwargs: Any) -> list[UnitInput] | None:
        if not self.adapter.is_tower(unit):
            return super()._run_unit(unit, processors, savers, inputs, is_last, **kwargs)
        self.placement.enter(unit)
        for processor in processors:
            processor.preprocess(unit)
            if inputs is not None and processor.needs_forward(unit):
                self._forward_tower(unit, inputs)
                self._towers_changed = True
            processor.postprocess(unit)
        self._towers_changed |= _replaced_linears(unit)
        for saver in savers:
            saver.save_unit(unit)
        self.placement.leave(unit)
        last_tower = unit is [u for u in self._units if self.adapter.is_tower(u)][-1]
        if inputs is not None and last_tower and self._towers_changed:
            logger.info("Encoder towers were changed: capturing the first decoder layer's inputs again.")
            return self._recapture()
        return inputs

    def _recapture(self) -> list[Any]:
        samples = self._stage.samples
        self.placement.prepare_prefix(self._model, self._units)
        try:
            return self.adapter.capture_unit_inputs(self._model, samples)
        finally:
            self.placement.finish_prefix(self._model, self._units)
