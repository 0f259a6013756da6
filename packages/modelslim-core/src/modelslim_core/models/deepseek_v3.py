"""DeepSeek-V3 family: V3, V3-0324, R1, R1-0528, V3.1, V3.1-Terminus (and V3.2, which adds a sparse-attention indexer).

A decoder layer is a unit. Attention is MLA: `q_a_proj` -> `q_a_layernorm` -> `q_b_proj` (or a plain
`q_proj` when `q_lora_rank` is null), `kv_a_proj_with_mqa` -> `kv_a_layernorm` -> `kv_b_proj`, `o_proj`.
The first `first_k_dense_replace` layers have a dense MLP; the others a router (`mlp.gate`, a weight plus
the `e_score_correction_bias` routing bias, never quantized), shared experts (`mlp.shared_experts`, a dense
MLP) and routed experts, split per expert by `MoEAdapterMixin`.

The multi-token-prediction (MTP) layer that hub checkpoints store after the last decoder layer
(`model.layers.<num_hidden_layers>.*`) is not part of the transformers model: it is not calibrated, and the
savers copy it to the output float, which is how vLLM-Ascend loads its MTP draft (models/mtp.py).
"""

from __future__ import annotations

from modelslim_core.models.base import ModelAdapter
from modelslim_core.models.moe import MoEAdapterMixin
from modelslim_core.models.mtp import MtpLayersMixin
from modelslim_core.rotation.layout import DecoderRotationLayout


class DeepseekV3Adapter(MtpLayersMixin, MoEAdapterMixin, ModelAdapter):
    family = "deepseek_v3"
    model_types = (
        "DeepSeek-V3",
        "DeepSeek-V3-0324",
        "DeepSeek-R1",
        "DeepSeek-R1-0528",
        "DeepSeek-V3.1",
        "DeepSeek-V3.1-Terminus",
    )
    model_type_prefixes = ("DeepSeek-V3", "DeepSeek-R1")
    hf_model_types = ("deepseek_v3",)
    #: MLA: the input norm feeds both down-projections, the q latent norm feeds q_b_proj. kv_b_proj stays
    #: float in the practices (vLLM-Ascend absorbs it), so its norm is not smoothed.
    family_smoothing_pairs = (
        ("norm-linear", "input_layernorm", ("self_attn.q_a_proj", "self_attn.kv_a_proj_with_mqa")),
        ("norm-linear", "self_attn.q_a_layernorm", ("self_attn.q_b_proj",)),
    )

    #: Linears of the V3.2 lightning indexer that read the normed residual stream (V3 has none).
    indexer_inputs: tuple[str, ...] = ()

    @property
    def rotation_layout(self) -> DecoderRotationLayout:
        """MLA reads the stream through its two down-projections (q_proj when there is no q latent) and has
        no v_proj: values come out of kv_b_proj, so attention gets no head_dim rotation."""
        query = "self_attn.q_a_proj" if self.config_json.get("q_lora_rank") else "self_attn.q_proj"
        inputs = (query, "self_attn.kv_a_proj_with_mqa", *self.indexer_inputs)
        return DecoderRotationLayout(attn_inputs=inputs, value=None)


class DeepseekV32Adapter(DeepseekV3Adapter):
    family = "deepseek_v3_2"
    model_types = ("DeepSeek-V3.2-Exp", "DeepSeek-V3.2")
    indexer_inputs = ("self_attn.indexer.wk", "self_attn.indexer.weights_proj")
    model_type_prefixes = ("DeepSeek-V3.2",)
    hf_model_types = ("deepseek_v32",)
    #: Why KV-cache / FA3 processors find no attention here (attention/processor.py names it when refusing).
    attention_note = (
        "This family's DSA attention caches one compressed latent per token (kv_lora_rank + rope channels), not "
        "per-head keys and values, so there are no per-channel KV-cache scales to calibrate: vLLM-Ascend quantizes "
        "that cache, and the indexer's, to int8 itself at serve time, with per-token scales, when started with "
        "--additional-config '{\"enable_sparse_sfa_c8\": true, \"enable_sparse_li_c8\": true}'. FA3 scales for "
        "the latent cache (vLLM-Ascend's FAKQuant on MLA) are not computed by fa3_quant yet (docs/model-families.md)."
    )
