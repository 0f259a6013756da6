"""`quarot`: rotate the model's residual stream by a random Hadamard matrix so activations lose their outliers.

Data-free and exact in float (see rotation/quarot_transform.py for the algebra). It is a whole-model
transform that fits the unit pipeline in two parts: `pre_run` transforms the embeddings, final norm and
LM head (reading them from the checkpoint first in a layer-wise run), `preprocess` transforms each decoder
layer as the runner enters it, before any later processor of the same unit looks at it. Put it first in
`spec.process`: processors before it would calibrate on the unrotated model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator
from torch import nn

from modelslim_core.rotation.export import ONLINE_ROTATIONS, ROTATION_EXTRAS
from modelslim_core.rotation.layout import rotates_unit
from modelslim_core.rotation.quarot_transform import QuarotSettings, QuarotTransform
from modelslim_core.runtime.processor import Processor, ProcessorConfig
from modelslim_core.runtime.unit import Unit


def check_power_of_two(value: int, field: str, allow_minus_one: bool = False) -> int:
    if allow_minus_one and value == -1:
        return value
    if value < 1 or value & (value - 1):
        allowed = "-1 or a power of two" if allow_minus_one else "a power of two ≥ 1"
        raise ValueError(f"{field} must be {allowed}")
    return value


class RotationFields(ProcessorConfig):
    """The QuaRot settings shared by `quarot` and `adapt_rotation` stage 2."""

    online: bool = False
    block_size: int = -1
    down_proj_online_layers: list[int] = Field(default_factory=list)
    max_tp_size: int = 4

    @field_validator("block_size")
    @classmethod
    def _block_size(cls, value: int) -> int:
        return check_power_of_two(value, "block_size", allow_minus_one=True)

    @field_validator("max_tp_size")
    @classmethod
    def _max_tp_size(cls, value: int) -> int:
        return check_power_of_two(value, "max_tp_size")

    @field_validator("down_proj_online_layers")
    @classmethod
    def _layers(cls, value: list[int]) -> list[int]:
        if any(index < 0 for index in value):
            raise ValueError("down_proj_online_layers holds decoder layer indices (0, 1, ...)")
        return value

    def export_types(self) -> frozenset[str]:
        """Online rotations and the exported global rotation need a saver that writes QuaRot extras (and online
        rotations an engine that applies them)."""
        settings = self.settings()
        extras = frozenset({ROTATION_EXTRAS}) if settings.online or settings.export_extra_info else frozenset()
        return extras | {ONLINE_ROTATIONS} if settings.online else extras

    def settings(self, export_extra_info: bool = False) -> QuarotSettings:
        return QuarotSettings(self.block_size, self.online, tuple(self.down_proj_online_layers), self.max_tp_size,
                              export_extra_info)


class QuarotConfig(RotationFields):
    type: Literal["quarot"] = "quarot"
    export_extra_info: bool = True

    def settings(self) -> QuarotSettings:
        return super().settings(self.export_extra_info)


class RotationProcessor(Processor):
    """Runs a QuarotTransform over the model; subclasses choose the hidden-size rotation."""

    def __init__(self, config: RotationFields, context):
        super().__init__(config, context)
        self.transform: QuarotTransform | None = None

    def make_transform(self) -> QuarotTransform:
        return QuarotTransform(self.context, self.config.settings())

    def pre_run(self, model: nn.Module) -> None:
        self.transform = self.make_transform()
        self.transform.apply_model(model)

    def preprocess(self, unit: Unit) -> None:
        if rotates_unit(self.context.adapter, unit):
            self.transform.apply_unit(unit)

    @classmethod
    def supports_distributed(cls, config: RotationFields) -> bool:
        """Data-free and seeded: every rank builds the same rotation, nothing to reduce."""
        return True


class QuarotProcessor(RotationProcessor):
    config_class = QuarotConfig
    config: QuarotConfig
