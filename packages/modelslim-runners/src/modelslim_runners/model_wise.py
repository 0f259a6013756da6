"""`model_wise`: the whole model on the device; fastest when it fits (seed: models below ~32B)."""

from __future__ import annotations

from modelslim_core.runtime.runner import Runner, Stage
from modelslim_runners.pipeline import UnitPipeline
from modelslim_runners.placement import Placement


class ModelWiseRunner(Runner):
    name = "model_wise"

    def run(self, stages: list[Stage]) -> None:
        UnitPipeline(self.context, Placement(self.context)).run(stages)
