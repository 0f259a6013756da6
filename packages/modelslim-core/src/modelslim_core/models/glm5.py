"""GLM-5 and GLM-5.1 (glm_moe_dsa): DeepSeek-V3.2's architecture — MLA attention with the lightning indexer
(`self_attn.indexer.wq_b/wk/weights_proj`, kept float by the practices: it only ranks tokens, and its top-k is
sensitive to small errors), a dense first block and a DeepSeek-style MoE. Rotation reaches the indexer's
stream readers (wk, weights_proj) like V3.2. MTP layers after the last decoder layer are copied to the output float (models/mtp.py).
"""

from __future__ import annotations

from modelslim_core.models.deepseek_v3 import DeepseekV32Adapter


class Glm5Adapter(DeepseekV32Adapter):
    family = "glm_5"
    model_types = ("GLM-5", "GLM-5.1")
    model_type_prefixes = ("GLM-5",)
    hf_model_types = ("glm_moe_dsa",)
