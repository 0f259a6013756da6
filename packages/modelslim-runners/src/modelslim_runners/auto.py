"""`auto`: choose a runner from the devices and the memory at hand.

Several device indices mean data parallelism (`dp_layer_wise`). On the host, the run's memory budget is
the free RAM (capped by the process's cgroup limit) unless --max_memory gives one. Otherwise the whole model goes on the
device (`model_wise`) when three times its compute-dtype size fits in the device's free memory (weights,
quantized copies and activations), and the model is processed layer by layer otherwise. Except for GPTQ on the
host: there the device is the host itself, so model_wise saves no transfers, while loading the whole model
through transformers holds it (and the checkpoint's pages) at once; layer_wise reads one layer at a time and
writes the same bytes (tests/cli/test_quant_e2e.py). On a 4-layer cut of SmolLM2-135M (W4A16 GPTQ group 64,
24 texts, one thread, one run each under load 7-8) the process peaked at 1051 MiB instead of 1193 MiB.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

from modelslim_core import registry
from modelslim_core.runtime.runner import Runner, Stage
from modelslim_runners.budget import host_budget_bytes
from modelslim_runners.memory import device_available_bytes, model_bytes_in

logger = logging.getLogger(__name__)

HEADROOM = 3.0
GIB = 2**30


class AutoRunner(Runner):
    name = "auto"

    def choose(self, stages: Sequence[Stage] = ()) -> tuple[str, str]:
        """The runner name and the reason, for the log (`stages`: what will run; GPTQ on the host goes
        layer by layer)."""
        from modelslim_runners.pipeline import accumulates_hessians  # noqa: PLC0415 - the pipeline imports torch

        device = self.context.device
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
            return "dp_layer_wise", f"launched by torchrun with WORLD_SIZE={os.environ['WORLD_SIZE']}"
        if device.indices and len(device.indices) > 1:
            return "dp_layer_wise", f"{len(device.indices)} devices were given ({device})"
        if device.torch_device.type == "cpu" and any(accumulates_hessians(stage.processors) for stage in stages):
            return "layer_wise", "GPTQ on the host, which is the device: one layer in memory at a time"
        needed = model_bytes_in(self.context.model_path, self.context.adapter.source_dtype, self.context.compute_dtype)
        free = device_available_bytes(device.torch_device)
        detail = f"model needs ~{needed / GIB:.2f} GiB in {self.context.compute_dtype}, {free / GIB:.2f} GiB free on {device}"
        if needed * HEADROOM <= free:
            return "model_wise", detail
        return "layer_wise", detail

    def run(self, stages: list[Stage]) -> None:
        name, reason = self.choose(stages)
        logger.info("Runner auto -> %s (%s).", name, reason)
        if self.context.max_memory is None and self.context.device.torch_device.type == "cpu":
            self.context.max_memory = host_budget_bytes()  # free RAM (and the cgroup's limit) bound every piece
            logger.info("Memory budget: %.2f GiB (free host memory plus what this process holds; --max_memory "
                        "sets it explicitly).", self.context.max_memory / GIB)
        registry.load(registry.RUNNERS, name)(self.context).run(stages)
