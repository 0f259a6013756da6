"""The `spec` of `multimodal_vlm_modelslim_v1` (seed "multimodal_vlm_modelslim_v1 Configuration").

Fields: `runner` (only layer_wise runs; any other value is accepted with a warning, as documented),
`process` and `save` (exactly as modelslim_v1: the same processor and saver parsing), `dataset` (an index
file, a folder holding one, a deprecated image folder, or a short name under calib/), `default_text` (the
prompt of entries without text; non-empty). `prior` may only be empty: the reference accepts prior stages
and silently ignores them, which would quietly drop algorithm steps a user asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from modelslim_core.protocol.spec import check_savers_can_write, parse_processor_list, parse_saver_list
from modelslim_core.protocol.validation import StrictModel, validate
from modelslim_core.runtime.processor import ProcessorConfig
from modelslim_core.runtime.saver import SaverConfig
from modelslim_vlm.dataset.sample import DEFAULT_TEXT

RUNNER = "layer_wise"
#: Our shipped multimodal set (calib/vlm_calib); the reference's default is a text set useless here.
DEFAULT_DATASET = "vlm_calib"


class _SpecFields(StrictModel):
    runner: str = RUNNER
    prior: list[Any] = Field(default_factory=list)
    process: list[Any] = Field(default_factory=list)
    save: list[Any] | None = None  # omitted: the default saver (protocol/spec.py)
    dataset: str = DEFAULT_DATASET
    default_text: str = DEFAULT_TEXT

    @field_validator("prior")
    @classmethod
    def _no_prior(cls, value: list[Any]) -> list[Any]:
        if value:
            raise ValueError("prior stages are not supported by multimodal_vlm_modelslim_v1; move their processors "
                             "into process (in order) or leave prior empty")
        return value

    @field_validator("default_text")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("default_text must be a non-empty prompt")
        return value.strip()

    @field_validator("dataset")
    @classmethod
    def _dataset_named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("dataset must name an index.jsonl, a folder holding one, or a set under calib/")
        return value


@dataclass
class VlmSpec:
    runner: str
    process: list[ProcessorConfig]
    save: list[SaverConfig]
    dataset: str
    default_text: str


_SPEC_HINT = (
    "multimodal_vlm_modelslim_v1 takes runner, process, save, dataset (index.jsonl with image/audio/video and text) "
    "and default_text."
)


def parse_vlm_spec(spec: Any, path: str) -> VlmSpec:
    fields = validate(_SpecFields, spec, path, hint=_SPEC_HINT)
    process = parse_processor_list(fields.process, f"{path}.process")
    save = parse_saver_list(fields.save, f"{path}.save", process)
    check_savers_can_write(process, save, path)
    return VlmSpec(fields.runner, process, save, fields.dataset, fields.default_text)
