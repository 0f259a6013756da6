"""The unit pipeline every runner shares.

For each stage: build its processors and savers, capture the first unit's inputs (only if some processor
needs calibration data), then for each unit run every processor's preprocess → forward (only when that
processor asks for it) → postprocess, hand the unit to the savers, and feed the unit's outputs to the next
unit. A unit's forward runs once per data-consuming processor and never otherwise, except once to produce
the next unit's inputs when no processor ran it or the last one that did reports its outputs stale.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from modelslim_core.calib.text import load_texts
from modelslim_core.protocol.spec import build_processor, build_saver, processor_class
from modelslim_core.runtime.context import RunContext
from modelslim_core.runtime.processor import Processor
from modelslim_core.runtime.runner import Stage
from modelslim_core.runtime.saver import Saver
from modelslim_core.runtime.unit import Unit, UnitInput
from modelslim_runners.placement import Placement, move

logger = logging.getLogger(__name__)


def stage_needs_data(stage: Stage) -> bool:
    return any(processor_class(config).needs_data(config) for config in stage.processors)


class UnitPipeline:
    """Runs stages over one model with a given placement."""

    def __init__(self, context: RunContext, placement: Placement):
        self.context = context
        self.adapter = context.adapter
        self.placement = placement
        self._texts_by_dataset: dict[str, list[str]] = {}
        self._samples: dict[str, list[dict[str, torch.Tensor]]] = {}

    def run(self, stages: list[Stage]) -> None:
        for stage in stages:  # read every dataset first: a bad dataset must fail before minutes of model loading
            if stage_needs_data(stage):
                self._texts(stage.dataset or "")
        started = time.perf_counter()
        model = self.adapter.load_model(self.context.compute_dtype)
        logger.info("Model loaded in %.1f s.", time.perf_counter() - started)
        self.placement.on_model_loaded(model)
        for stage in stages:
            self._run_stage(model, stage)

    def _texts(self, dataset: str) -> list[str]:
        if dataset not in self._texts_by_dataset:
            self._texts_by_dataset[dataset] = load_texts(dataset)
        return self._texts_by_dataset[dataset]

    def _calibration_samples(self, dataset: str) -> list[dict[str, torch.Tensor]]:
        if dataset not in self._samples:  # keyed by dataset: prior stages with their own data get their own
            self._samples[dataset] = self.adapter.tokenize(self._texts(dataset))
        return self._samples[dataset]

    @torch.no_grad()
    def _capture(self, model: nn.Module, stage: Stage) -> list[UnitInput] | None:
        if not stage_needs_data(stage):
            logger.info("Stage %s is data-free: no calibration forward is run.", stage.name)
            return None
        samples = self._calibration_samples(stage.dataset or "")
        captured = self.adapter.capture_unit_inputs(model, samples)
        return [move(item, self.placement.activation_device) for item in captured]

    def _run_stage(self, model: nn.Module, stage: Stage) -> None:
        processors = [build_processor(config, self.context) for config in stage.processors]
        savers = [build_saver(config, self.context) for config in stage.savers]
        try:
            inputs = self._capture(model, stage)
            for hook_owner in (*processors, *savers):
                hook_owner.pre_run(model)
            units = self.adapter.units(model)
            for unit in tqdm(units, desc=f"quantizing ({stage.name})", unit="layer", disable=not sys.stderr.isatty()):
                inputs = self._run_unit(unit, processors, savers, inputs, is_last=unit is units[-1])
            for processor in processors:
                processor.post_run()
            for saver in savers:
                saver.save_remaining(model, [unit.name for unit in units])
                saver.finish()
        except BaseException:
            for saver in savers:
                saver.abort()
            raise

    @torch.no_grad()
    def _run_unit(
        self,
        unit: Unit,
        processors: list[Processor],
        savers: list[Saver],
        inputs: list[UnitInput] | None,
        is_last: bool,
    ) -> list[UnitInput] | None:
        started = time.perf_counter()
        self.placement.enter(unit)
        outputs = None
        for processor in processors:
            processor.preprocess(unit)
            if inputs is not None and processor.needs_forward(unit):
                outputs = self._forward(unit, inputs)
            processor.postprocess(unit)
            if processor.outputs_stale(unit):
                outputs = None  # recomputed below from the unit as it is now
        if inputs is not None and not is_last and outputs is None:
            outputs = self._forward(unit, inputs)
        for saver in savers:
            saver.save_unit(unit)
        self.placement.leave(unit, keep_weights=not savers)
        logger.debug("%s done in %.2f s.", unit.name, time.perf_counter() - started)
        if inputs is None or is_last:
            return None
        return [self.adapter.next_unit_input(out, inp) for out, inp in zip(outputs, inputs)]

    def _forward(self, unit: Unit, inputs: list[UnitInput]) -> list[Any]:
        device = self.placement.device
        back = self.placement.activation_device
        outputs = []
        for item in inputs:
            output = unit.module(*move(item.args, device), **move(item.kwargs, device))
            hidden = output[0] if isinstance(output, (tuple, list)) else output
            outputs.append(hidden.to(back))
        return outputs
