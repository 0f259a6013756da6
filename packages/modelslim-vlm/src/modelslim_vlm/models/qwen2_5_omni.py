"""Qwen2.5-Omni, thinker only: audio tower, vision tower and a Qwen2 language model taking text, images,
audio and video. The talker and the vocoder (speech output) are not quantized and not saved.

`model_path` may hold the full Omni model (config model_type `qwen2_5_omni`, weights under `thinker.`,
`talker.`, `token2wav.`) or a thinker alone. Saved names carry the checkpoint's `thinker.` prefix
(`thinker.model.layers.*`, `thinker.visual.*`, `thinker.audio_tower.*`, `thinker.lm_head.*`), which is
what serving engines load the thinker from; unlike the reference, the description's global keys
(version, model_quant_type, ...) stay unprefixed and the shard index keeps its standard form.
"""

from __future__ import annotations

from typing import Any

from modelslim_vlm.models.base import VlmAdapter

FULL_MODEL_TYPE = "qwen2_5_omni"


class Qwen25OmniThinkerAdapter(VlmAdapter):
    family = "qwen2_5_omni_thinker"
    model_types = ("Qwen2.5-Omni-3B", "Qwen2.5-Omni-7B")
    model_type_prefixes = ("Qwen2.5-Omni-",)
    hf_model_types = (FULL_MODEL_TYPE, "qwen2_5_omni_thinker")
    model_class_name = "Qwen2_5OmniThinkerForConditionalGeneration"
    tower_paths = ("model.audio_tower", "model.visual")
    stream_writers = ("model.audio_tower.proj", "model.visual.merger.mlp.2")
    modalities = ("image", "audio", "video")
    checkpoint_prefixes = (
        ("model.audio_tower", "thinker.audio_tower"),
        ("model.visual", "thinker.visual"),
        ("model.language_model", "thinker.model"),
        ("lm_head", "thinker.lm_head"),
    )

    #: config.json model_type of the full release (thinker, talker, vocoder) and its transformers config class.
    full_model_type = FULL_MODEL_TYPE
    full_config_class = "Qwen2_5OmniConfig"

    def pretrained_kwargs(self) -> dict[str, Any]:
        if self.hf_model_type != self.full_model_type:
            return {}
        import transformers

        config = getattr(transformers, self.full_config_class).from_pretrained(self.model_path, local_files_only=True)
        return {"config": config.thinker_config}
