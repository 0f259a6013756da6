"""`group`: several processors that share ONE calibration forward per unit.

Without a group, each processor in `spec.process` gets its own forward over the calibration data. A group
runs its children's preprocess hooks in order, a single forward if any child needs it, then the
children's postprocess hooks in order — e.g. static attention and dynamic MLP quantization in one pass.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from torch import nn

from modelslim_core.errors import ConfigError
from modelslim_core.protocol.validation import validate
from modelslim_core.runtime.processor import Processor, ProcessorConfig
from modelslim_core.runtime.unit import Unit


class GroupConfig(ProcessorConfig):
    type: Literal["group"] = "group"
    configs: list[Any] = Field(min_length=1)

    @classmethod
    def from_yaml(cls, data: Any, path: str) -> "GroupConfig":
        from modelslim_core.protocol.spec import parse_processor_list, processor_class

        config = validate(cls, data, path)
        config._yaml_path = path
        config.configs = parse_processor_list(config.configs, f"{path}.configs")
        for index, child in enumerate(config.configs):
            if not processor_class(child).groupable:
                raise ConfigError(
                    f"{path}.configs[{index}].type: {child.type} cannot run inside a group: it runs the unit's "
                    "forward itself, which would feed the other children's calibration a second time.",
                    f"move the {child.type} item out of the group, directly into the process list.",
                )
        return config

    def export_types(self) -> frozenset[str]:
        return frozenset().union(*(child.export_types() for child in self.configs))

    def per_group_export_types(self) -> frozenset[str]:
        return frozenset().union(*(child.per_group_export_types() for child in self.configs))

    def layer_schemes(self):
        return [scheme for child in self.configs for scheme in child.layer_schemes()]

    def linear_selections(self) -> list[tuple[str, Any]]:
        return [selection for child in self.configs for selection in child.linear_selections()]


class GroupProcessor(Processor):
    config_class = GroupConfig
    config: GroupConfig

    def __init__(self, config: GroupConfig, context):
        from modelslim_core.protocol.spec import build_processor

        super().__init__(config, context)
        self.children = [build_processor(child, context) for child in config.configs]

    @classmethod
    def needs_data(cls, config: GroupConfig) -> bool:
        from modelslim_core.protocol.spec import processor_class

        return any(processor_class(child).needs_data(child) for child in config.configs)

    @classmethod
    def supports_distributed(cls, config: GroupConfig) -> bool:
        from modelslim_core.protocol.spec import processor_class

        return all(processor_class(child).supports_distributed(child) for child in config.configs)

    @classmethod
    def selection_is_local(cls, config: GroupConfig) -> bool:
        from modelslim_core.protocol.spec import processor_class

        return all(processor_class(child).selection_is_local(child) for child in config.configs)

    @classmethod
    def handles_pieces(cls, config: GroupConfig) -> bool:
        from modelslim_core.protocol.spec import processor_class

        return all(processor_class(child).handles_pieces(child) for child in config.configs)

    @classmethod
    def handles_stored_weights(cls, config: GroupConfig) -> bool:
        from modelslim_core.protocol.spec import processor_class

        return all(processor_class(child).handles_stored_weights(child) for child in config.configs)

    @classmethod
    def handles_calibrated_pieces(cls, config: GroupConfig) -> bool:
        from modelslim_core.protocol.spec import processor_class

        return all(processor_class(child).handles_calibrated_pieces(child) for child in config.configs)

    def pre_run(self, model: nn.Module) -> None:
        for child in self.children:
            child.pre_run(model)

    def preprocess(self, unit: Unit) -> None:
        for child in self.children:
            child.preprocess(unit)

    def needs_forward(self, unit: Unit) -> bool:
        return any(child.needs_forward(unit) for child in self.children)

    def forward_needs_only(self, unit: Unit) -> list[nn.Module]:
        """What every child that uses the shared forward needs (the whole unit if one of them needs it)."""
        needed: list[nn.Module] = []
        for child in self.children:
            if child.needs_forward(unit):
                modules = child.forward_needs_only(unit)
                if not modules:
                    return []
                needed.extend(modules)
        return needed

    def postprocess(self, unit: Unit) -> None:
        for child in self.children:
            child.postprocess(unit)

    def outputs_stale(self, unit: Unit) -> bool:
        return any(child.outputs_stale(unit) for child in self.children)

    def post_run(self) -> None:
        for child in self.children:
            child.post_run()

    def state_dict(self) -> dict:
        return {"children": [child.state_dict() for child in self.children]}

    def load_state_dict(self, state: dict) -> None:
        for child, child_state in zip(self.children, state.get("children", [])):
            child.load_state_dict(child_state)
