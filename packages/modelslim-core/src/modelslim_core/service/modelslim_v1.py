"""The `modelslim_v1` service: text LLMs, processors over decoder-layer units, savers at the end.

Spec fields (seed "modelslim_v1 Configuration"): `runner` (auto | model_wise | layer_wise | any registered
runner), `prior` (stages run before the main process, each with its own dataset), `process`, `save`,
`dataset` (default mix_calib.jsonl).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from pydantic import Field, field_validator

from modelslim_core import registry
from modelslim_core.attention.processor import attention_configs, check_attention_selections
from modelslim_core.protocol.spec import check_savers_can_write, parse_processor_list, parse_saver_list
from modelslim_core.protocol.validation import StrictModel, validate
from modelslim_core.runtime.processor import ProcessorConfig
from modelslim_core.runtime.runner import Stage
from modelslim_core.runtime.saver import SaverConfig
from modelslim_core.service.base import QuantRequest, QuantService
from modelslim_core.service.run_context import build_run_context, compute_dtype_for  # noqa: F401 - compute_dtype_for: public here before

logger = logging.getLogger(__name__)

DEFAULT_DATASET = "mix_calib.jsonl"


def known_runner(name: str) -> str:
    """`name` if it is a registered runner; a ValueError listing the known ones otherwise."""
    known = registry.names(registry.RUNNERS)
    if name not in known:
        raise ValueError(f"unknown runner {name!r}; known runners: {', '.join(known)}")
    return name


class _PriorStageFields(StrictModel):
    process: list[Any] = Field(min_length=1)
    dataset: str | None = None


class _SpecFields(StrictModel):
    ignored_keys = {"default_text": "it is the prompt multimodal_vlm_modelslim_v1 pairs with images that have no "
                                    "text; a text model calibrates on the texts of spec.dataset"}

    runner: str = "auto"
    prior: list[Any] = Field(default_factory=list)
    process: list[Any] = Field(default_factory=list)
    save: list[Any] | None = None  # omitted: the default saver (protocol/spec.py)
    dataset: str = DEFAULT_DATASET

    @field_validator("runner")
    @classmethod
    def _check_runner(cls, value: str) -> str:
        return known_runner(value)


@dataclass
class PriorStage:
    process: list[ProcessorConfig]
    dataset: str | None = None


@dataclass
class ModelslimV1Spec:
    runner: str
    process: list[ProcessorConfig]
    save: list[SaverConfig]
    dataset: str = DEFAULT_DATASET
    prior: list[PriorStage] = field(default_factory=list)


class ModelslimV1Service(QuantService):
    apiversion = "modelslim_v1"

    @classmethod
    def parse_spec(cls, spec: Any, path: str) -> ModelslimV1Spec:
        fields = validate(_SpecFields, spec, path)
        prior = []
        for index, raw_stage in enumerate(fields.prior):
            stage_path = f"{path}.prior[{index}]"
            stage = validate(_PriorStageFields, raw_stage, stage_path)
            prior.append(PriorStage(parse_processor_list(stage.process, f"{stage_path}.process"), stage.dataset))
        process = parse_processor_list(fields.process, f"{path}.process")
        save = parse_saver_list(fields.save, f"{path}.save", process)
        check_savers_can_write(process, save, path)
        return ModelslimV1Spec(runner=fields.runner, process=process, save=save, dataset=fields.dataset, prior=prior)

    @classmethod
    def check_request(cls, spec: ModelslimV1Spec, request: QuantRequest) -> None:
        """The base check, then: attention processors (KV cache, FA3, ...) must find attention they can act on,
        checked on the model's skeleton (no weights are read) before anything is loaded."""
        super().check_request(spec, request)
        stages = cls.stages(spec)
        if not any(list(attention_configs(stage.processors)) for stage in stages):
            return
        adapter = request.adapter
        skeleton = adapter.build_skeleton(adapter.source_dtype or torch.float32)
        units = adapter.units(skeleton)
        for stage in stages:
            check_attention_selections(adapter, units, stage.processors)

    @staticmethod
    def stages(spec: ModelslimV1Spec) -> list[Stage]:
        stages = [
            Stage(f"prior[{i}]", stage.process, [], stage.dataset or spec.dataset) for i, stage in enumerate(spec.prior)
        ]
        stages.append(Stage("main", spec.process, spec.save, spec.dataset))
        return stages

    def run(self, spec: ModelslimV1Spec, request: QuantRequest) -> None:
        context = build_run_context(request)
        runner_cls = registry.load(registry.RUNNERS, spec.runner)
        logger.info("Runner: %s; compute dtype: %s; device: %s.", spec.runner, context.compute_dtype, request.device)
        runner_cls(context).run(self.stages(spec))
