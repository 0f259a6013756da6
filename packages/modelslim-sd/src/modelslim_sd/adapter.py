"""The base adapter of diffusion pipelines stored in the diffusers layout.

A diffusers pipeline directory holds `model_index.json` (the pipeline class and one entry per component)
and a folder per component. The denoisers — one diffusion transformer (DiT), or two for Wan2.2-A14B's
high-noise and low-noise experts — are quantized one after the other, each on its own; their blocks are
the units (one or more block lists, e.g. FLUX's dual-stream then single-stream blocks). Calibration
samples are not texts but recorded calls of each denoiser (its positional and keyword arguments), which
`forward_sample` replays. A family adapter adds its inference settings and the way it runs its pipeline
to record those calls.
"""

from __future__ import annotations

import copy
import json
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel
from safetensors import safe_open
from torch import nn

from modelslim_core.errors import ConfigError, ModelError
from modelslim_core.models.base import ModelAdapter
from modelslim_core.protocol.validation import describe_fields, validate
from modelslim_core.runtime.unit import Unit, UnitInput
from modelslim_runners.placement import move

if TYPE_CHECKING:
    from modelslim_core.attention.sites import AttentionSite

_SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}

_LAYOUT_HINT = (
    "point --model_path at a diffusers-format pipeline directory: model_index.json plus one folder per "
    "component (transformer/, vae/, text_encoder/, tokenizer/, scheduler/)."
)


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from `path`, or a ModelError naming the file."""
    if not path.is_file():
        raise ModelError(f"{path} does not exist, so the directory is not a {what}.", _LAYOUT_HINT)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} cannot be read as JSON: {exc}.", _LAYOUT_HINT) from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object.", _LAYOUT_HINT)
    return data


@dataclass(frozen=True)
class Denoiser:
    """One quantized network of a pipeline: its folder (`component`) and the name its output goes under.

    `expert` is "" for single-denoiser pipelines (output in save_path itself) and the subdirectory name for
    the experts of a two-expert pipeline (Wan2.2-A14B: high_noise_model, low_noise_model).
    """

    component: str
    expert: str = ""

    @property
    def label(self) -> str:
        """What calibration files and log lines call this denoiser."""
        return self.expert or self.component


class DiffusionAdapter(ModelAdapter, ABC):
    """A diffusers pipeline whose denoiser(s) (DiTs with block lists) are quantized block by block."""

    apiversions = ("multimodal_sd_modelslim_v1",)
    #: `_class_name` values of model_index.json this family accepts.
    pipeline_class_names: ClassVar[tuple[str, ...]]
    #: The diffusers class of the denoiser(s).
    component_class_name: ClassVar[str]
    #: The component this adapter instance quantizes (`for_denoiser` returns one per denoiser).
    component: str = "transformer"
    expert: str = ""
    #: Attributes of the denoiser holding its blocks (the units), in execution order.
    block_lists: ClassVar[tuple[str, ...]] = ("blocks",)
    #: Names of a block's outputs (a bare tensor is `hidden_states`); they replace the same-named inputs of
    #: the next block. Blocks take `hidden_states, encoder_hidden_states` as their first two parameters.
    block_outputs: ClassVar[tuple[str, ...]] = ("hidden_states",)
    #: The pydantic model of the family's inference settings (`model_config` / `inference_config`).
    inference_config_class: ClassVar[type[BaseModel]]

    # --- the directory ------------------------------------------------------------------------------------
    def read_model_config(self) -> dict[str, Any]:
        """Check model_index.json names this family's pipeline and denoisers; return the first denoiser's config."""
        index = read_json_object(self.model_path / "model_index.json", "diffusers pipeline directory")
        self.model_index = index
        if index.get("_class_name") not in self.pipeline_class_names:
            raise ModelError(
                f"{self.model_path / 'model_index.json'} describes a {index.get('_class_name')!r} pipeline, "
                f"but model type {self.model_type!r} needs a {' or '.join(self.pipeline_class_names)}.",
                "check --model_type and --model_path.",
            )
        self.check_pipeline(index)
        configs = {}
        for denoiser in self.denoisers():
            entry = index.get(denoiser.component)
            if not (isinstance(entry, list) and len(entry) == 2 and entry[1] == self.component_class_name):
                raise ModelError(
                    f"{self.model_path / 'model_index.json'}: component {denoiser.component!r} is {entry!r}, "
                    f"expected [\"diffusers\", \"{self.component_class_name}\"].",
                    _LAYOUT_HINT,
                )
            configs[denoiser.component] = read_json_object(
                self.model_path / denoiser.component / "config.json", f"{denoiser.component} folder")
        return configs.get(self.component) or next(iter(configs.values()))

    def check_pipeline(self, index: dict[str, Any]) -> None:
        """Family-specific checks of model_index.json (e.g. the number of experts); the default accepts it."""

    def denoisers(self) -> list[Denoiser]:
        """The networks quantized, in order; one `transformer` unless the family says otherwise."""
        return [Denoiser("transformer")]

    def for_denoiser(self, denoiser: Denoiser) -> DiffusionAdapter:
        """A copy of this adapter that loads, names and saves `denoiser` (the service runs one per denoiser)."""
        bound = copy.copy(self)
        bound.component, bound.expert = denoiser.component, denoiser.expert
        bound.config_json = read_json_object(self.model_path / denoiser.component / "config.json",
                                             f"{denoiser.component} folder")
        return bound

    @property
    def checkpoint_dir(self) -> Path:
        return self.model_path / self.component

    @property
    def source_dtype(self) -> torch.dtype | None:
        """The most common float dtype among the component's stored tensors (its config does not say)."""
        counts: Counter[torch.dtype] = Counter()
        for path in sorted(self.checkpoint_dir.glob("*.safetensors")):
            with safe_open(path, framework="pt") as handle:
                for key in handle.keys():
                    dtype = _SAFETENSORS_DTYPES.get(handle.get_slice(key).get_dtype())
                    if dtype is not None:
                        counts[dtype] += 1
        return counts.most_common(1)[0][0] if counts else None

    # --- loading ------------------------------------------------------------------------------------------
    def component_class(self) -> type[nn.Module]:
        import diffusers

        return getattr(diffusers, self.component_class_name)

    def load_model(self, dtype: torch.dtype) -> nn.Module:
        """The quantized component alone (the rest of the pipeline is only needed to capture its inputs)."""
        try:
            model = self.component_class().from_pretrained(
                self.model_path, subfolder=self.component, dtype=dtype, local_files_only=True
            )
        except Exception as exc:
            raise ModelError(
                f"cannot load {self.component_class_name} from {str(self.checkpoint_dir)!r}: {exc}",
                "check that the folder holds the component's config.json and *.safetensors weights.",
            ) from None
        model.eval()
        model.requires_grad_(False)
        return model

    # --- structure ----------------------------------------------------------------------------------------
    def units(self, model: nn.Module) -> list[Unit]:
        units: list[Unit] = []
        for attr in self.block_lists:
            blocks = getattr(model, attr, None)
            if not isinstance(blocks, nn.ModuleList):
                raise ModelError(
                    f"{type(model).__name__} has no `{attr}` block list.",
                    "this architecture needs its own diffusion adapter.",
                )
            units += [Unit(name=f"{attr}.{i}", module=block, index=len(units) + i) for i, block in enumerate(blocks)]
        if not units:
            raise ModelError(f"{type(model).__name__} has no blocks in {', '.join(self.block_lists)}.",
                             "this architecture needs its own diffusion adapter.")
        return units

    def unit_output(self, output: Any) -> Any:
        """Every output of a block: dual-stream blocks (FLUX, HunyuanVideo, Qwen-Image-Edit) return the image
        and the text stream, and the next block needs both (block_outputs names them)."""
        return tuple(output) if isinstance(output, (tuple, list)) else output

    def next_unit_input(self, output: Any, previous: UnitInput) -> UnitInput:
        """The block's outputs replace the same-named inputs; everything else (timestep embedding, rotary
        embedding, masks) is passed on unchanged."""
        values = output if isinstance(output, (tuple, list)) else (output,)
        args, kwargs = list(previous.args), dict(previous.kwargs)
        for position, name in enumerate(("hidden_states", "encoder_hidden_states")):
            if name not in self.block_outputs:
                continue
            value = values[self.block_outputs.index(name)]
            if name in kwargs or position >= len(args):
                kwargs[name] = value
            else:
                args[position] = value
        return UnitInput(args=tuple(args), kwargs=kwargs)

    def attention_sites(self, unit: Unit) -> list[AttentionSite]:
        """The diffusers attention modules of a block (FA3 quantization and online rotation act on them)."""
        from modelslim_core.attention.diffusers_taps import find_diffusers_attention_sites

        return find_diffusers_attention_sites(unit.module, unit.name)

    # --- calibration data ---------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> list[Any]:
        raise ConfigError(
            f"model type {self.model_type!r} is calibrated from its own pipeline's transformer calls, not from a "
            "text dataset.",
            "use apiversion multimodal_sd_modelslim_v1 with a prompt set in spec.dataset (e.g. wan2_2_t2v) or the "
            "prompts in multimodal_sd_config.inference_config.",
        )

    def forward_sample(self, model: nn.Module, sample: UnitInput, device: torch.device) -> Any:
        """Replay one recorded call of the component."""
        return model(*move(sample.args, device), **move(sample.kwargs, device))

    def parse_inference_config(self, raw: dict[str, Any], path: str) -> BaseModel:
        """Validate the inference settings; an error lists every valid field and its range."""
        cls = self.inference_config_class
        return validate(cls, raw, path, hint=f"valid fields of {path}: {describe_fields(cls)}.")

    @abstractmethod
    def task_name(self, config: Any) -> str:
        """The generation task the settings describe (t2v, i2v, ti2v, t2i, edit, ...): part of the file names."""

    def calibration_file_name(self, config: Any, denoiser: Denoiser) -> str:
        """One file per task and denoiser, so runs of other tasks or experts never read each other's data."""
        return f"calib_data_{self.task_name(config)}_{denoiser.label}.pth"

    @abstractmethod
    def capture_settings(self, config: Any) -> dict[str, Any]:
        """The settings the recorded calls depend on (JSON values): part of the calibration fingerprint."""

    @abstractmethod
    def capture_calibration(
        self, config: Any, device: torch.device, dtype: torch.dtype
    ) -> dict[str, list[UnitInput]]:
        """Run the float pipeline once per prompt and return every call of each denoiser (by component), on
        the CPU. A two-expert pipeline records each expert on the timesteps it serves."""
