"""`awq`: activation-aware scaling, the ratio chosen by the quantized output of the enclosing block.

For ratio r = g / n_grid (g = 0 … n_grid − 1): s = max(mean|x|^r, 1e-4), normalised by sqrt(max(s)·min(s))
(non-finite entries → 1). Each candidate quantizes every consumer's W·s with `weight_qconfig`, divides by
s again, and runs the lowest common ancestor of the consumers (e.g. `self_attn` for q/k/v, `mlp` for
gate/up, the linear itself for a single consumer) on its inputs recorded during the calibration forward;
the ratio with the smallest summed MSE against the float outputs wins (strictly smaller). Only the scale
is kept: quantization is left to a following linear_quant. `ov` pairs use the subgraph's KV-group method
(the reference's per-channel vector is only valid without grouped-query attention). Not data-parallel.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from modelslim_core.models.subgraphs import Subgraph
from modelslim_core.protocol.qconfig import QConfig, _check_method
from modelslim_core.quant.methods import build_weight_quantizer
from modelslim_core.quant.schemes import WEIGHT_METHODS
from modelslim_core.runtime.storage import store
from modelslim_core.runtime.unit import Unit, UnitInput
from modelslim_core.smoothing.processor_base import SmoothingProcessor, SubgraphKinds
from modelslim_core.smoothing.scales import subgraph_scale
from modelslim_core.smoothing.stats import ChannelStats

logger = logging.getLogger(__name__)

RATIO_FLOOR = 1e-4


class AwqConfig(SubgraphKinds):
    type: Literal["awq"] = "awq"
    weight_qconfig: QConfig
    n_grid: int = Field(default=20, gt=0)

    @field_validator("weight_qconfig")
    @classmethod
    def _data_free_weight(cls, qconfig: QConfig) -> QConfig:
        _check_method(qconfig, WEIGHT_METHODS, "weight")
        if build_weight_quantizer(qconfig).needs_data:
            raise ValueError(f"method {qconfig.method!r} needs calibration data; awq searches with a data-free "
                             "weight method (minmax or ssz)")
        return qconfig


def ratio_scale(act: torch.Tensor, ratio: float) -> torch.Tensor:
    scale = act.pow(ratio).clamp(min=RATIO_FLOOR)
    scale = scale / (scale.max() * scale.min()).sqrt()
    return torch.where(torch.isfinite(scale), scale, torch.ones_like(scale))


def common_ancestor(names: tuple[str, ...]) -> str:
    """Longest dotted prefix shared by all names (the name itself for one name)."""
    parts = [name.split(".") for name in names]
    shared = []
    for column in zip(*parts):
        if len(set(column)) != 1:
            break
        shared.append(column[0])
    return ".".join(shared)


def _first_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


class AwqProcessor(SmoothingProcessor):
    config_class = AwqConfig
    config: AwqConfig
    stops_after_statistics = False  # it replays each subgraph's enclosing block from the inputs it recorded
    uses_mean_abs = True

    def __init__(self, config: AwqConfig, context):
        super().__init__(config, context)
        self.weight_quantizer = build_weight_quantizer(config.weight_qconfig)
        self._ancestors: dict[str, nn.Module] = {}
        self._inputs: dict[str, list[UnitInput]] = {}
        self._handles: list[Any] = []

    def preprocess(self, unit: Unit) -> None:
        super().preprocess(unit)
        for subgraph in self._subgraphs:
            name = common_ancestor(subgraph.target_names)
            if name in self._ancestors:
                continue
            module = unit.module if name == unit.name else unit.module.get_submodule(name[len(unit.name) + 1:])
            self._ancestors[name] = module
            self._inputs[name] = []
            self._handles.append(module.register_forward_pre_hook(self._recorder(name), with_kwargs=True))

    def _recorder(self, name: str):
        def record(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            self._inputs[name].append(UnitInput(args=args, kwargs=kwargs))

        return record

    def postprocess(self, unit: Unit) -> None:
        for handle in self._handles:  # the search below runs the ancestors again: stop recording first
            handle.remove()
        try:
            super().postprocess(unit)
        finally:
            self._handles, self._ancestors, self._inputs = [], {}, {}

    def _run(self, name: str) -> list[torch.Tensor]:
        module = self._ancestors[name]
        return [_first_tensor(module(*item.args, **item.kwargs)).float() for item in self._inputs[name]]

    def _loss(self, name: str, reference: list[torch.Tensor]) -> float:
        return sum(float((out - ref).pow(2).mean()) for out, ref in zip(self._run(name), reference))

    def smooth(self, subgraph: Subgraph, stats: ChannelStats) -> None:
        name = common_ancestor(subgraph.target_names)
        reference = self._run(name)
        originals = [target.weight.detach().clone() for target in subgraph.targets]
        act = stats.mean_abs
        best_scale, best_loss, best_ratio = torch.ones_like(act), float("inf"), 0.0
        for step in range(self.config.n_grid):
            ratio = step / self.config.n_grid
            scale = subgraph_scale(subgraph, act, act, lambda a, _w: ratio_scale(a, ratio))
            for target, weight in zip(subgraph.targets, originals):
                scaled = weight.float() * scale.to(weight.device)
                fake = self.weight_quantizer.quantize(scaled).dequantize().to(weight.device) / scale.to(weight.device)
                store(target.weight, fake)
            loss = self._loss(name, reference)
            if loss < best_loss:
                best_scale, best_loss, best_ratio = scale, loss, ratio
        for target, weight in zip(subgraph.targets, originals):
            target.weight.data = weight
        logger.debug("%s: awq ratio %.2f, loss %.3g", subgraph.source_name, best_ratio, best_loss)
        self.context.recorder.debug("search", f"{subgraph.source_name}.ratio", {"ratio": best_ratio, "loss": best_loss})
        self.fuse(subgraph, best_scale)
