"""GLM-4.5V / GLM-4.6V (and GLM-4.6V-Flash): a vision tower and a GLM-4.5-style language model — GQA attention
with biases, a dense first layer, then a DeepSeek-style MoE (router `mlp.gate` with a routing bias, float;
shared experts; routed experts split per expert).

Releases use config model_type `glm4v_moe` (GLM-4.5V, GLM-4.6V: Glm4vMoeForConditionalGeneration), which is what
vLLM-Ascend's quantization config knows (its expert layout is listed under `glm4v_moe`; under transformers'
newer `glm46v` model_type it finds no MoE mapping and refuses the experts). transformers also has `glm46v`
(Glm46VForConditionalGeneration) and the dense `glm4v`; the adapter builds the class config.json names. `model.visual` is one unit, processed whole and kept float; its merger's down projection
writes into the residual stream (`stream_writers`). An MTP layer after the last decoder layer
(`model.language_model.layers.<num_hidden_layers>`) is copied to the output float (models/mtp.py).
Calibration takes images and text: the video entries of a set are left out with a warning (the processor's
per-frame video expansion does not line up with the tower's features for short clips here), which does not
change what is quantized — the tower is float and the language layers see image and text tokens.
"""

from __future__ import annotations

from typing import Any

from modelslim_core.models.moe import MoEAdapterMixin
from modelslim_core.models.mtp import MtpLayersMixin
from modelslim_vlm.models.base import VlmAdapter

#: config.json model_type -> the transformers class of the full model.
MODEL_CLASSES = {"glm46v": "Glm46VForConditionalGeneration", "glm4v_moe": "Glm4vMoeForConditionalGeneration",
                 "glm4v": "Glm4vForConditionalGeneration"}


class Glm4vAdapter(MtpLayersMixin, MoEAdapterMixin, VlmAdapter):
    family = "glm46v"
    model_types = ("GLM-4.6V", "GLM-4.5V", "GLM-4.6V-Flash")
    model_type_prefixes = ("GLM-4.6V", "GLM-4.5V")
    hf_model_types = tuple(MODEL_CLASSES)
    model_class_name = MODEL_CLASSES["glm46v"]
    stream_writers = ("model.visual.merger.down_proj",)
    float_linears = ("mlp.gate",)
    modalities = ("image",)

    def model_class(self) -> Any:
        import transformers

        return getattr(transformers, MODEL_CLASSES.get(self.hf_model_type or "", self.model_class_name))
