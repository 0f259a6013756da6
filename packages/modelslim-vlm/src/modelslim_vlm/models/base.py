"""The base adapter of vision-language (and omni) models stored in the Hugging Face layout.

Units, in order: each encoder tower (vision, audio) as ONE unit — kept float by the shipped practices —
then the language model's decoder layers. Layers are calibrated on the real multimodal stream: one forward
of the whole model per sample, stopped at the first decoder layer, records that layer's inputs (media
features already scattered into the text embeddings, the model's own multimodal position ids) and every
call of each tower. Samples are built by the model's processor from its chat template (media, then the
text, generation prompt on), with media decoded by us (dataset/media.py).

Checkpoint names: transformers nests modules differently from some checkpoints on disk (Qwen2.5-VL keeps
`visual.*` and `model.layers.*`; the Omni thinker's checkpoint prefixes `thinker.`); `checkpoint_prefixes`
maps module paths back, so the saved names are the ones serving engines load.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar

import torch
from torch import nn

from modelslim_core.errors import ConfigError, DatasetError, ModelError
from modelslim_core.rotation.layout import DecoderRotationLayout
from modelslim_core.models.base import ModelAdapter
from modelslim_core.runtime.unit import Unit, UnitInput
from modelslim_runners.placement import move
from modelslim_vlm.dataset.media import DecodedSample
from modelslim_vlm.dataset.sample import MediaSample
from modelslim_vlm.models.sample_input import VlmSampleInput, moved

logger = logging.getLogger(__name__)


class _FirstLayerReached(Exception):
    """Stops the capture forward once the first decoder layer's inputs are recorded."""


class VlmAdapter(ModelAdapter):
    apiversions = ("multimodal_vlm_modelslim_v1",)
    #: The transformers class of the full model (towers + language model + LM head).
    model_class_name: ClassVar[str]
    #: Module paths of the encoder towers, each one unit, in visit order.
    tower_paths: ClassVar[tuple[str, ...]] = ("model.visual",)
    #: Module path of the language model's decoder layer list.
    layers_path: ClassVar[str] = "model.language_model.layers"
    #: Media the model takes (index fields).
    modalities: ClassVar[tuple[str, ...]] = ("image", "video")
    #: (module path prefix, checkpoint prefix) pairs, first match wins; names matching none are kept.
    checkpoint_prefixes: ClassVar[tuple[tuple[str, str], ...]] = ()
    #: Tower linears (fnmatch module paths) whose outputs enter the language model's residual stream: the
    #: mergers. QuaRot / adapt_rotation rotate their outputs together with the token embeddings.
    stream_writers: ClassVar[tuple[str, ...]] = ()

    @property
    def rotation_layout(self) -> DecoderRotationLayout:
        """The language model's decoder layout; its final norm sits under the language model, not at `model.norm`."""
        return DecoderRotationLayout(final_norm=f"{self.layers_path.rpartition('.')[0]}.norm",
                                     stream_writers=self.stream_writers)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._processor = None

    # --- names --------------------------------------------------------------------------------------------
    def saved_tensor_name(self, name: str) -> str:
        for module_prefix, saved_prefix in self.checkpoint_prefixes:
            if name == module_prefix or name.startswith(module_prefix + "."):
                return saved_prefix + name[len(module_prefix):]
        return name

    # --- loading ------------------------------------------------------------------------------------------
    def model_class(self) -> type[nn.Module]:
        import transformers

        return getattr(transformers, self.model_class_name)

    def pretrained_kwargs(self) -> dict[str, Any]:
        """Extra from_pretrained arguments (e.g. the thinker's part of a full Omni config)."""
        return {}

    def load_model(self, dtype: torch.dtype) -> nn.Module:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        try:
            model = self.model_class().from_pretrained(
                self.model_path, dtype=dtype, local_files_only=True, trust_remote_code=self.trust_remote_code,
                **self.pretrained_kwargs(),
            )
        except Exception as exc:
            raise ModelError(f"cannot load {self.model_class_name} from {str(self.model_path)!r}: {exc}",
                             "check that model_path holds the model's config.json and *.safetensors weights.") from None
        model.eval()
        model.requires_grad_(False)
        return model

    def load_processor(self) -> Any:
        if self._processor is None:
            from transformers import AutoProcessor

            try:
                self._processor = AutoProcessor.from_pretrained(self.model_path, local_files_only=True,
                                                                trust_remote_code=self.trust_remote_code)
            except Exception as exc:
                raise ModelError(
                    f"cannot load the processor of {str(self.model_path)!r}: {exc}",
                    "calibration needs the model's processor files (preprocessor_config.json, tokenizer files and "
                    "the chat template) in model_path; torchvision must be installed (the `vlm` extra).",
                ) from None
        return self._processor

    @property
    def audio_sampling_rate(self) -> int | None:
        """The rate the processor's audio feature extractor expects (None: the model takes no audio)."""
        if "audio" not in self.modalities:
            return None
        return int(self.load_processor().feature_extractor.sampling_rate)

    def output_module_names(self, model: nn.Module) -> set[str]:
        return {"lm_head"}

    # --- structure ----------------------------------------------------------------------------------------
    def tower_units(self, model: nn.Module) -> list[Unit]:
        return [Unit(name=path, module=model.get_submodule(path), index=i) for i, path in enumerate(self.tower_paths)]

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        layers = model.get_submodule(self.layers_path)
        if not isinstance(layers, nn.ModuleList) or not len(layers):
            raise ModelError(f"{type(model).__name__} has no decoder layers at {self.layers_path}.",
                             "this architecture needs its own VLM adapter.")
        return layers

    def units(self, model: nn.Module) -> list[Unit]:
        towers = self.tower_units(model)
        layers = [Unit(name=f"{self.layers_path}.{i}", module=layer, index=len(towers) + i)
                  for i, layer in enumerate(self.decoder_layers(model))]
        return towers + layers

    def is_tower(self, unit: Unit) -> bool:
        return unit.name in self.tower_paths

    # --- calibration data ---------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> list[Any]:
        raise ConfigError(f"model type {self.model_type!r} is calibrated on multimodal samples, not a text set.",
                          "use apiversion multimodal_vlm_modelslim_v1 with an index.jsonl dataset.")

    def usable_sample(self, sample: MediaSample) -> MediaSample:
        """`sample` without the media this model cannot take (a VL model and an audio track): one shared set can
        serve every family, and the warning names what was left out."""
        unsupported = [m for m in sample.modalities if m not in self.modalities]
        if not unsupported:
            return sample
        logger.warning("%s: model type %r takes no %s; that part of the entry is not used.", sample.where,
                       self.model_type, " or ".join(unsupported))
        return dataclasses.replace(sample, **{m: None for m in unsupported})

    def chat_messages(self, sample: DecodedSample) -> list[dict[str, Any]]:
        """One user turn: the media (image, audio, video), then the text."""
        content: list[dict[str, Any]] = [{"type": m} for m in ("image", "audio", "video")
                                         if getattr(sample, m) is not None]
        content.append({"type": "text", "text": sample.text})
        return [{"role": "user", "content": content}]

    def processor_media(self, sample: DecodedSample) -> dict[str, Any]:
        """The processor's media arguments: decoded images, audio arrays, video frames with their metadata."""
        media: dict[str, Any] = {}
        if sample.image is not None:
            media["images"] = [sample.image]
        if sample.video is not None:
            media.update(videos=[sample.video.frames], video_metadata=[sample.video.metadata()], do_sample_frames=True)
        if sample.audio is not None:
            media["audio"] = [sample.audio]
        return media

    def build_inputs(self, sample: DecodedSample) -> dict[str, Any]:
        """The model inputs of one sample (batch of one, CPU tensors)."""
        processor = self.load_processor()
        try:
            text = processor.apply_chat_template(self.chat_messages(sample), add_generation_prompt=True, tokenize=False)
            inputs = processor(text=[text], return_tensors="pt", **self.processor_media(sample))
        except Exception as exc:
            raise DatasetError(f"the processor of {self.model_type!r} rejected {sample.source.where}: {exc}",
                               "check the entry's media (size, length) against the model's processor settings.") from None
        return dict(inputs)

    def forward_sample(self, model: nn.Module, sample: dict[str, Any], device: torch.device) -> Any:
        return model(**move(sample, device), use_cache=False)

    def language_model_extras(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """What the language model adds between decoder layers, from its forward's keyword arguments."""
        return {}

    @torch.no_grad()
    def capture_unit_inputs(self, model: nn.Module, samples: list[dict[str, Any]]) -> list[VlmSampleInput]:
        """One forward per sample up to the first decoder layer, recording the towers' calls on the way."""
        first_layer = self.decoder_layers(model)[0]
        language_model = model.get_submodule(self.layers_path.rpartition(".")[0])
        calls: dict[str, list[UnitInput]] = {}
        extras: dict[str, Any] = {}
        captured: list[VlmSampleInput] = []

        def tower_hook(path: str):
            def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
                calls.setdefault(path, []).append(UnitInput(args=args, kwargs=kwargs))
            return hook

        def language_hook(_module: nn.Module, _args: tuple, kwargs: dict) -> None:
            extras.update(self.language_model_extras(kwargs))

        def layer_hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            captured.append(VlmSampleInput(args=args, kwargs=kwargs, tower_calls=dict(calls), extras=dict(extras)))
            raise _FirstLayerReached

        handles = [model.get_submodule(p).register_forward_pre_hook(tower_hook(p), with_kwargs=True)
                   for p in self.tower_paths]
        handles.append(language_model.register_forward_pre_hook(language_hook, with_kwargs=True))
        handles.append(first_layer.register_forward_pre_hook(layer_hook, with_kwargs=True))
        device = next(model.parameters()).device
        try:
            for sample in samples:
                calls.clear()
                extras.clear()
                try:
                    self.forward_sample(model, sample, device)
                except _FirstLayerReached:
                    continue
        finally:
            for handle in handles:
                handle.remove()
        if len(captured) != len(samples):
            raise ModelError(f"the forward pass of {type(model).__name__} never reached its first decoder layer.",
                             "this architecture needs its own VLM adapter.")
        return [moved(item, torch.device("cpu")) for item in captured]

    def after_layer(self, hidden: torch.Tensor, sample: VlmSampleInput) -> torch.Tensor:
        """What the language model does to the hidden states between decoder layer `sample.layer` and the next."""
        return hidden

    def next_unit_input(self, output: Any, previous: UnitInput) -> UnitInput:
        if not isinstance(previous, VlmSampleInput):
            return super().next_unit_input(output, previous)
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        hidden = self.after_layer(hidden, previous)
        if previous.args:
            return dataclasses.replace(previous, args=(hidden, *previous.args[1:]), layer=previous.layer + 1)
        return dataclasses.replace(previous, kwargs={**previous.kwargs, "hidden_states": hidden}, layer=previous.layer + 1)
