"""`auto`: choose a runner from the devices and the memory at hand.

Several device indices mean data parallelism (`dp_layer_wise`). On the host, the run's memory budget is
the free RAM (capped by the process's cgroup limit) unless --max_memory gives one. Otherwise the whole model goes on the
device (`model_wise`) when three times its compute-dtype size fits in the device's free memory (weights,
quantized copies and activations), and the model is processed layer by layer otherwise.
"""

from __future__ import annotations

import logging
import os

from modelslim_core import registry
from modelslim_core.runtime.runner import Runner, Stage
from modelslim_runners.budget import host_budget_bytes
from modelslim_runners.memory import device_available_bytes, model_bytes_in

logger = logging.getLogger(__name__)

HEADROOM = 3.0
GIB = 2**30


class AutoRunner(Runner):
    name = "auto"

    def choose(self) -> tuple[str, str]:
        """The runner name and the reason, for the log."""
        device = self.context.device
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ:
            return "dp_layer_wise", f"launched by torchrun with WORLD_SIZE={os.environ['WORLD_SIZE']}"
        if device.indices and len(device.indices) > 1:
            return "dp_layer_wise", f"{len(device.indices)} devices were given ({device})"
        needed = model_bytes_in(self.context.model_path, self.context.adapter.source_dtype, self.context.compute_dtype)
        free = device_available_bytes(device.torch_device)
        detail = f"model needs ~{needed / GIB:.2f} GiB in {self.context.compute_dtype}, {free / GIB:.2f} GiB free on {device}"
        if needed * HEADROOM <= free:
            return "model_wise", detail
        return "layer_wise", detail

    def run(self, stages: list[Stage]) -> None:
        name, reason = self.choose()
        logger.info("Runner auto -> %s (%s).", name, reason)
        if self.context.max_memory is None and self.context.device.torch_device.type == "cpu":
            self.context.max_memory = host_budget_bytes()  # free RAM (and the cgroup's limit) bound every piece
            logger.info("Memory budget: %.2f GiB (free host memory plus what this process holds; --max_memory "
                        "sets it explicitly).", self.context.max_memory / GIB)
        registry.load(registry.RUNNERS, name)(self.context).run(stages)
