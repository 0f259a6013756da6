"""The `spec` of `multimodal_sd_modelslim_v1` (seed "multimodal_sd_modelslim_v1 Configuration").

Fields: `runner` (only layer_wise runs; any other registered runner is accepted with a warning), `process`,
`save`, and `multimodal_sd_config` with `dump_config` and the model's inference settings under
`model_config` or its alias `inference_config` (not both). The inference settings belong to the model
adapter, so they are kept raw here and validated against the adapter before any work starts.
`prior` may only be empty. `dataset` names the prompt set the calibration generations run on (a shipped
set such as `wan2_2_t2v`, or a path; see prompt_sets.py): calibration data comes from running the model's own
pipeline on those prompts, or on the ones in the inference settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from modelslim_core.errors import ConfigError
from modelslim_core.protocol.spec import check_savers_can_write, parse_processor_list, parse_saver_list
from modelslim_core.protocol.validation import StrictModel, describe_fields, suggestion, validate
from modelslim_core.runtime.processor import ProcessorConfig
from modelslim_core.runtime.saver import SaverConfig
from modelslim_core.service.modelslim_v1 import known_runner
from modelslim_sd.mindie_fa import check_mindie_fa
from modelslim_sd.prompt_sets import PromptSet, read_dataset_field

#: Keys of `multimodal_sd_config`; model_config and inference_config are two names for one thing.
SD_CONFIG_KEYS = ("dump_config", "model_config", "inference_config")


class DumpConfig(StrictModel):
    """Where calibration data is loaded from or captured to."""

    enable_dump: bool = Field(default=True, description="true | false; false only for data-free configs")
    capture_mode: Literal["args"] = Field(default="args", description="'args', the only mode")
    dump_data_dir: str = Field(default="", description="directory of the calib_data files; '' means save_path")


class _SpecFields(StrictModel):
    runner: str = "layer_wise"
    dataset: str | None = Field(default=None, description="a shipped prompt set (e.g. wan2_2_t2v) or a path")
    prior: list[Any] = Field(default_factory=list)
    process: list[Any] = Field(default_factory=list)
    save: list[Any] | None = None  # omitted: the default saver (protocol/spec.py)
    multimodal_sd_config: dict[str, Any] = Field(default_factory=dict)

    @field_validator("runner")
    @classmethod
    def _check_runner(cls, value: str) -> str:
        return known_runner(value)

    @field_validator("prior")
    @classmethod
    def _no_prior(cls, value: list[Any]) -> list[Any]:
        if value:
            raise ValueError("prior stages are not supported by multimodal_sd_modelslim_v1; leave the list empty")
        return value


@dataclass
class SdSpec:
    runner: str
    process: list[ProcessorConfig]
    save: list[SaverConfig]
    dump: DumpConfig
    #: The raw inference settings and their YAML path, validated against the model adapter later.
    inference: dict[str, Any]
    inference_path: str
    #: The prompt set `dataset` names (None: the prompts of the inference settings).
    prompt_set: PromptSet | None = None


_SPEC_HINT = (
    "multimodal_sd_modelslim_v1 takes runner, process, save, dataset (a prompt set) and multimodal_sd_config; "
    "its calibration data comes from running the pipeline on the prompts (of the prompt set, or of "
    "multimodal_sd_config.model_config), so `prior` is not used."
)


def _inference_settings(sd_config: dict[str, Any], path: str) -> tuple[dict[str, Any], str]:
    present = [key for key in ("model_config", "inference_config") if key in sd_config]
    if len(present) == 2:
        raise ConfigError(
            f"{path}: model_config and inference_config are two names for the same settings; both are given.",
            "keep one of them.",
        )
    key = present[0] if present else "model_config"
    settings = sd_config.get(key, {})
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{path}.{key} must be a mapping, got {type(settings).__name__}.", "write it as key: value lines.")
    return settings, f"{path}.{key}"


def parse_sd_spec(spec: Any, path: str) -> SdSpec:
    """Validate the spec; the inference settings are only checked to be a mapping here."""
    fields = validate(_SpecFields, spec, path, hint=_SPEC_HINT)
    sd_path = f"{path}.multimodal_sd_config"
    unknown = [key for key in fields.multimodal_sd_config if key not in SD_CONFIG_KEYS]
    if unknown:
        raise ConfigError(
            f"{sd_path}: unknown field(s) {', '.join(map(repr, unknown))}{suggestion(unknown[0], SD_CONFIG_KEYS)}.",
            f"valid fields: {', '.join(SD_CONFIG_KEYS)}.",
        )
    dump_path = f"{sd_path}.dump_config"
    dump = validate(
        DumpConfig, fields.multimodal_sd_config.get("dump_config") or {}, dump_path,
        hint=f"valid fields of {dump_path}: {describe_fields(DumpConfig)}.",
    )
    inference, inference_path = _inference_settings(fields.multimodal_sd_config, sd_path)
    process = parse_processor_list(fields.process, f"{path}.process")
    save = parse_saver_list(fields.save, f"{path}.save", process)
    check_mindie_fa(process, save)  # before the savers' check: its reason is MindIE-SD's, not the file format's
    check_savers_can_write(process, save, path)
    prompt_set = read_dataset_field(fields.dataset, f"{path}.dataset")
    return SdSpec(fields.runner, process, save, dump, inference, inference_path, prompt_set)
