"""`layer_wise`: one unit on the device at a time, activations on the host, saved units released."""

from __future__ import annotations

from modelslim_core.runtime.runner import Runner, Stage
from modelslim_runners.pipeline import UnitPipeline
from modelslim_runners.placement import LayerWisePlacement


class LayerWiseRunner(Runner):
    name = "layer_wise"

    def run(self, stages: list[Stage]) -> None:
        UnitPipeline(self.context, LayerWisePlacement(self.context)).run(stages)
