"""Qwen3.5 / Qwen3.6 (dense 27B; MoE 35B-A3B, 122B-A10B, 397B-A17B): a vision tower and a hybrid language model
of Gated DeltaNet linear attention and gated full attention (every `full_attention_interval`-th layer).

- `model.visual` is one unit, processed first as a whole and kept float by the practices; its merger writes
  into the residual stream (`stream_writers`). No DeepStack.
- Full-attention layers (`self_attn.q_proj` with its output gate, `k_proj`, `v_proj`, `o_proj`): quantized, the
  input norm smoothed into q/k/v (the dense patterns find them only on those layers).
- Linear-attention layers: `in_proj_qkv`, `in_proj_z` and `out_proj` are plain projections and are quantized
  (vLLM-Ascend fuses in_proj_qkv with in_proj_z, so the practices give both one precision); `in_proj_b` and
  `in_proj_a` stay float: they produce the per-head write strength and decay of the recurrent state (an error
  there compounds over every later token), have 2 x heads outputs, and vLLM-Ascend fuses the two.
- MoE (Qwen3.5-MoE): routed experts split per expert (release names `mlp.experts.<e>.gate_proj`), the shared
  expert quantized; the router `mlp.gate` (a bare weight) and the 1-output `mlp.shared_expert_gate` float.
- The release's MTP module (`mtp.*`) is copied to the output float (models/mtp.py).
Rotation: linear-attention layers read the stream through in_proj_*, which the decoder rotation layout does not
describe, so quarot / adapt_rotation refuse this family with a message.
"""

from __future__ import annotations

from modelslim_core.models.moe import MoEAdapterMixin
from modelslim_core.models.mtp import MtpLayersMixin
from modelslim_vlm.models.base import VlmAdapter

#: Model names of the releases, dense and MoE (resolved to the adapter config.json's model_type allows).
DENSE_NAMES = ("Qwen3.5-27B", "Qwen3.6-27B")
MOE_NAMES = ("Qwen3.5-397B-A17B", "Qwen3.5-122B-A10B", "Qwen3.5-35B-A3B", "Qwen3.6-35B-A3B")
LINEAR_ATTENTION_GATES = ("linear_attn.in_proj_b", "linear_attn.in_proj_a")


class Qwen35Adapter(MtpLayersMixin, VlmAdapter):
    family = "qwen3_5"
    model_types = DENSE_NAMES
    model_type_prefixes = ("Qwen3.5-", "Qwen3.6-")
    hf_model_types = ("qwen3_5",)
    model_class_name = "Qwen3_5ForConditionalGeneration"
    stream_writers = ("model.visual.merger.linear_fc2",)
    float_linears = LINEAR_ATTENTION_GATES
    mtp_after_layers = False
    mtp_prefixes = ("mtp.",)


class Qwen35MoeAdapter(MtpLayersMixin, MoEAdapterMixin, VlmAdapter):
    family = "qwen3_5_moe"
    model_types = MOE_NAMES
    model_type_prefixes = ("Qwen3.5-", "Qwen3.6-")
    hf_model_types = ("qwen3_5_moe",)
    model_class_name = "Qwen3_5MoeForConditionalGeneration"
    stream_writers = ("model.visual.merger.linear_fc2",)
    float_linears = LINEAR_ATTENTION_GATES + ("mlp.shared_expert_gate",)
    mtp_after_layers = False
    mtp_prefixes = ("mtp.",)
    family_smoothing_pairs = (("up-down", "mlp.shared_expert.up_proj", ("mlp.shared_expert.down_proj",)),)
