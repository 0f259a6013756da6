"""GLM-4.5 / 4.6 / 4.7 (glm4_moe) and GLM-4.7-Flash (glm4_moe_lite).

glm4_moe: GQA attention (q/k/v with biases, optional q/k norms), the first `first_k_dense_replace` layers dense,
the others a DeepSeek-style MoE: router `mlp.gate` (a bare weight plus `e_score_correction_bias`, float),
shared experts `mlp.shared_experts` and routed experts split per expert. The release appends one MTP layer at
index `num_hidden_layers` (copied to the output float, models/mtp.py).

glm4_moe_lite (GLM-4.7-Flash): the same MoE under DeepSeek-V3's MLA attention, so it shares that adapter's
smoothing pairs and rotation layout (kv_b_proj stays float in the practice: vLLM-Ascend's MLA absorbs it).
"""

from __future__ import annotations

from modelslim_core.models.base import ModelAdapter
from modelslim_core.models.deepseek_v3 import DeepseekV3Adapter
from modelslim_core.models.moe import MoEAdapterMixin
from modelslim_core.models.mtp import MtpLayersMixin


class Glm4MoeAdapter(MtpLayersMixin, MoEAdapterMixin, ModelAdapter):
    family = "glm4_moe"
    model_types = ("GLM-4.5", "GLM-4.5-Air", "GLM-4.6", "GLM-4.7")
    model_type_prefixes = ("GLM-4.5", "GLM-4.6", "GLM-4.7")
    hf_model_types = ("glm4_moe",)


class Glm4MoeLiteAdapter(DeepseekV3Adapter):
    family = "glm4_moe_lite"
    model_types = ("GLM-4.7-Flash",)
    model_type_prefixes = ("GLM-4.7-Flash",)
    hf_model_types = ("glm4_moe_lite",)
