"""`adapt_rotation`: QuaRot whose hidden-size rotation is refined on calibration data (two stages).

- `stage: 1` goes in `spec.prior`: it folds each layer's norm scales into their readers (the function is
  unchanged), records the sequence-mean input of every linear whose name contains a `layer_type` entry,
  and after the last layer learns R so that the activations rotated by Q·R quantize best (rotation/adapt.py).
  Q·R is handed to later stages through the run context.
- `stage: 2` goes in `spec.process`: plain QuaRot, except that the hidden-size rotation is the learned Q·R
  (head_dim and online rotations are QuaRot's). Without a stage-1 result it warns and uses plain QuaRot.
Each stage accepts only its own fields.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from modelslim_core.errors import ConfigError
from modelslim_core.processors.quarot import RotationFields, RotationProcessor, check_power_of_two
from modelslim_core.protocol.validation import validate
from modelslim_core.rotation.adapt import evenly_spaced_rows, optimize_rotation
from modelslim_core.rotation.hadamard import hidden_rotation
from modelslim_core.rotation.layout import attention_shape, layout_of, mlp_sites, rotates_unit
from modelslim_core.rotation.quarot_transform import QuarotTransform, fuse_layer_norms
from modelslim_core.runtime.distributed import gather_samples
from modelslim_core.runtime.processor import Processor, ProcessorConfig
from modelslim_core.runtime.unit import Unit

logger = logging.getLogger(__name__)

#: Where stage 1 leaves Q·R (float64 [hidden, hidden]) for stage 2.
STATE_KEY = "adapt_rotation.hidden_rotation"


class AdaptRotationConfig(ProcessorConfig):
    """Dispatches on `stage` to the stage's own field set."""

    type: Literal["adapt_rotation"] = "adapt_rotation"
    stage: int

    @classmethod
    def from_yaml(cls, data: Any, path: str) -> "AdaptRotationConfig":
        stage = data.get("stage") if isinstance(data, dict) else None
        stage_class = {1: AdaptRotationStage1Config, 2: AdaptRotationStage2Config}.get(stage) if type(stage) is int else None
        if stage_class is None:
            raise ConfigError(f"{path}.stage: must be 1 (learn the rotation, in spec.prior) or 2 (apply it, in "
                              f"spec.process), got {stage!r}.", "add `stage: 1` or `stage: 2`.")
        in_prior = ".prior[" in path
        if (stage == 1) != in_prior:
            where, other = ("spec.prior", "spec.process") if stage == 1 else ("spec.process", "spec.prior")
            raise ConfigError(
                f"{path}: adapt_rotation stage {stage} must be listed under {where}, not {other} (stage 1 learns the "
                "rotation in its own pass over the model before stage 2 rotates and quantizes it).",
                "put `{type: adapt_rotation, stage: 1}` in spec.prior[].process and `{type: adapt_rotation, stage: 2}` "
                "first in spec.process.",
            )
        config = validate(stage_class, data, path)
        config._yaml_path = path
        return config


class AdaptRotationStage1Config(AdaptRotationConfig):
    stage: Literal[1] = 1
    steps: int = Field(default=20, ge=1, le=1000)
    quant_dtype: Literal["int4", "int8"] = "int4"
    layer_type: list[str] = Field(default_factory=lambda: ["up_proj"], min_length=1)
    block_size: int = -1
    max_samples: int = Field(default=2048, ge=1)

    @field_validator("block_size")
    @classmethod
    def _block_size(cls, value: int) -> int:
        return check_power_of_two(value, "block_size", allow_minus_one=True)


class AdaptRotationStage2Config(AdaptRotationConfig, RotationFields):
    stage: Literal[2] = 2
    max_tp_size: int = Field(default=4, ge=1, le=64)  # no export_extra_info: the reference exports nothing here


class AdaptRotationStage1:
    """Collects activations and learns the rotation."""

    def __init__(self, config: AdaptRotationStage1Config, context):
        self.config = config
        self.context = context
        self.hidden_size = 0
        self.rows: list = []  # per unit: [samples, linears, hidden] sequence means
        self._handles: list = []
        self._unit_rows: list = []

    def pre_run(self, model: nn.Module) -> None:
        self.hidden_size = attention_shape(model).hidden_size
        self.rows = []

    def preprocess(self, unit: Unit) -> None:
        if not rotates_unit(self.context.adapter, unit):
            return
        layout = layout_of(self.context.adapter)
        mlp = mlp_sites(unit.module, layout, unit.name, self.hidden_size)
        fuse_layer_norms(unit.module, layout, unit.name, mlp.readers)
        self._unit_rows = []
        for site in self.context.adapter.linear_sites(unit):
            if not any(part in site.name for part in self.config.layer_type):
                continue
            if site.module.in_features != self.hidden_size:
                raise ConfigError(
                    f"{self.config.yaml_path}.layer_type selects {site.name}, whose input has {site.module.in_features} "
                    f"channels, not the hidden size {self.hidden_size} the rotation acts on.",
                    "select linears that read the residual stream (q_proj, k_proj, v_proj, gate_proj, up_proj).",
                )
            self._handles.append(site.module.register_forward_pre_hook(self._record))

    def _record(self, _module: nn.Module, args: tuple) -> None:
        x = args[0].detach().float()
        self._unit_rows.append(x.reshape(-1, x.shape[-2], x.shape[-1]).mean(dim=1).cpu() if x.dim() > 2 else x.cpu())

    def postprocess(self, unit: Unit) -> None:
        if self._unit_rows:  # one row per (sample, hooked linear), in forward order
            self.rows.append(torch.cat(self._unit_rows).reshape(-1, len(self._handles), self.hidden_size))
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._unit_rows = []

    def post_run(self) -> None:
        if not self.rows:
            raise ConfigError(f"{self.config.yaml_path}.layer_type {self.config.layer_type} matches no linear of the model.",
                              "use names such as up_proj or gate_proj.")
        # every rank optimises the same rows, in the same order → the same matrix as a single process
        rows = torch.cat([unit.reshape(-1, self.hidden_size) for unit in gather_samples(self.rows)])
        rows = evenly_spaced_rows(rows, self.config.max_samples)
        hadamard = hidden_rotation(self.hidden_size, self.config.block_size)
        self.context.state[STATE_KEY] = optimize_rotation(rows, hadamard, self.config.steps, self.config.quant_dtype)


class AdaptRotationProcessor(RotationProcessor):
    """Stage 1 delegates to AdaptRotationStage1; stage 2 is a RotationProcessor with the learned matrix."""

    config_class = AdaptRotationConfig

    def __init__(self, config: AdaptRotationConfig, context):
        Processor.__init__(self, config, context)
        self.transform = None
        self.stage1 = AdaptRotationStage1(config, context) if config.stage == 1 else None

    def make_transform(self) -> QuarotTransform:
        learned = self.context.state.get(STATE_KEY)
        if learned is None:
            logger.warning("%s: no rotation learned by an adapt_rotation stage 1 in spec.prior; applying plain QuaRot.",
                           self.config.yaml_path)
        return QuarotTransform(self.context, self.config.settings(), learned)

    def pre_run(self, model: nn.Module) -> None:
        if self.stage1 is not None:
            self.stage1.pre_run(model)
        else:
            super().pre_run(model)

    def preprocess(self, unit: Unit) -> None:
        if self.stage1 is not None:
            self.stage1.preprocess(unit)
        else:
            super().preprocess(unit)

    def needs_forward(self, unit: Unit) -> bool:
        return self.stage1 is not None

    def postprocess(self, unit: Unit) -> None:
        if self.stage1 is not None:
            self.stage1.postprocess(unit)

    def post_run(self) -> None:
        if self.stage1 is not None:
            self.stage1.post_run()

    @classmethod
    def needs_data(cls, config: AdaptRotationConfig) -> bool:
        return config.stage == 1

    @classmethod
    def supports_distributed(cls, config: AdaptRotationConfig) -> bool:
        """Stage 1 gathers every rank's activations and all ranks learn the same matrix; stage 2 is data-free."""
        return True
