"""DeepSeek-V4 (V4-Flash, V4-Pro): MoE with hash-routed first layers, hyper-connections and compressed attention.

What a decoder layer (one unit) holds and what the practices do with it:
- Attention: `q_a_proj` -> `q_a_norm` -> `q_b_proj`, one shared KV head `kv_proj`, and the grouped output
  projection `o_a_proj` (block-diagonal per head group) -> `o_b_proj`. `o_a_proj` stays float: it is an
  nn.Linear subclass whose forward multiplies head groups separately, so a per-tensor linear replacement would
  compute something else. The compressor and the lightning indexer under `self_attn.compressor` only pick
  and summarise past tokens; they stay float (their top-k is sensitive to small errors).
- MoE: router `mlp.gate` (its hash table `tid2eid` for the first layers, a bias for the others) float; routed
  experts split per expert with the family's clamped SwiGLU kept (`ClampedSwiGLU`); shared experts quantized.
- Hyper-connections (`attn_hc`, `ffn_hc`, `hc_head`) are small mixing parameters, not linears.
Checkpoint names: the release stores the base model without its `model.` prefix (`layers.<i>.attn.wq_a`,
`embed.weight`, `norm.weight`, `hc_head_fn`, `head.weight`), which is what vLLM-Ascend's DeepSeek-V4 mapping
expects; transformers' reverse rules give the inner names, `saved_tensor_name` drops the prefix.
No smoothing: the expert and shared-expert activations are clamped (not scale-equivariant) and the norms feed
the hyper-connection mix, so no producer/consumer pair keeps the layer's output unchanged. No rotation layout.
The release's MTP layers (`mtp.<i>.*`) are copied to the output float (models/mtp.py).
"""

from __future__ import annotations

from modelslim_core.models.base import ModelAdapter
from modelslim_core.models.moe import MoEAdapterMixin
from modelslim_core.models.mtp import MtpLayersMixin


class DeepseekV4Adapter(MtpLayersMixin, MoEAdapterMixin, ModelAdapter):
    family = "deepseek_v4"
    model_types = ("DeepSeek-V4-Flash", "DeepSeek-V4-Pro", "DeepSeek-V4-Flash-Base", "DeepSeek-V4-Pro-Base")
    model_type_prefixes = ("DeepSeek-V4",)
    hf_model_types = ("deepseek_v4",)
    float_linears = ("self_attn.o_a_proj", "self_attn.compressor.*", "mlp.gate")
    mtp_prefixes = ("mtp.",)

    #: Top-level names transformers' rules anchor at the start of a key (so they miss them under `model.`).
    _RELEASE_LEAVES = (("embed_tokens.", "embed."), ("hc_head.hc_", "hc_head_"))

    def saved_tensor_name(self, name: str) -> str:
        saved = super().saved_tensor_name(name).removeprefix("model.")
        for ours, release in self._RELEASE_LEAVES:
            if saved.startswith(ours):
                return release + saved[len(ours):]
        return saved

    def smoothing_subgraphs(self, unit) -> list:
        return []
