"""`weight_clip`: clip each matching linear's weights to ±k standard deviations of its output channel.

Clipping rare extreme weights before per-channel quantization shrinks the scale and so the rounding error
of all the other weights. It is data-free and knows nothing of ModelSlim's internals beyond the public
processor protocol, imported from `modelslim_core.api`: that is the point of this package.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from modelslim_core.api import LayerSelection, Processor, ProcessorConfig, Unit


class WeightClipConfig(ProcessorConfig, LayerSelection):
    type: Literal["weight_clip"] = "weight_clip"
    sigmas: float = Field(default=3.0, gt=0)


class WeightClipProcessor(Processor):
    config_class = WeightClipConfig
    config: WeightClipConfig

    def __init__(self, config: WeightClipConfig, context):
        super().__init__(config, context)
        self.filter = config.name_filter()

    def preprocess(self, unit: Unit) -> None:
        for site in self.context.adapter.linear_sites(unit):
            if isinstance(site.module, nn.Linear) and self.filter(site.name):
                clip_rows(site.module.weight.data, self.config.sigmas)

    def post_run(self) -> None:
        self.filter.warn_unmatched("weight_clip")


def clip_rows(weight: torch.Tensor, sigmas: float) -> None:
    """In place: limit each row to mean ± sigmas·std of that row."""
    mean = weight.mean(dim=1, keepdim=True)
    bound = sigmas * weight.std(dim=1, keepdim=True)
    weight.copy_(torch.maximum(torch.minimum(weight, mean + bound), mean - bound))
