"""Qwen3-Next (80B-A3B Instruct / Thinking): a hybrid of Gated DeltaNet linear attention and gated full
attention (every `full_attention_interval`-th layer), each layer followed by a MoE with one shared expert.

What is quantized, what stays float and why:
- Full-attention layers (`self_attn.q_proj` (query and output gate), `k_proj`, `v_proj`, `o_proj`): quantized,
  with the input norm smoothed into q/k/v as in Qwen3.
- Linear-attention layers: `linear_attn.in_proj_qkvz` and `linear_attn.out_proj` are plain projections (the
  practice quantizes out_proj and keeps in_proj_qkvz float: vLLM-Ascend fuses in_proj_qkvz with in_proj_ba into
  one layer of one precision); `linear_attn.in_proj_ba` stays float — it produces the per-head write strength (beta) and decay
  (through `A_log`/`dt_bias` and an exponential) of the recurrent state, so an error there compounds over every
  later token, and it has only 2 x heads outputs (nothing to save). The input norm is NOT smoothed into
  in_proj_qkvz: the projection feeds a causal convolution and per-head L2 norms, and the reference keeps its
  norm fusion to the full-attention layers. `conv1d`, `A_log`, `dt_bias` and the gated norm are not linears.
- MoE: routed experts and the shared expert are quantized; the router (`mlp.gate`) and the 1-output
  `mlp.shared_expert_gate` stay float (both decide how much of which expert reaches the stream).
The release's MTP module (`mtp.*`: fc, pre-fc norms and one decoder layer) is copied to the output float
(models/mtp.py). No rotation layout: linear-attention layers read the stream through in_proj_qkvz/in_proj_ba, which the
one-attention rotation layout does not describe.
"""

from __future__ import annotations

from modelslim_core.models.base import ModelAdapter
from modelslim_core.models.moe import MoEAdapterMixin
from modelslim_core.models.mtp import MtpLayersMixin


class Qwen3NextAdapter(MtpLayersMixin, MoEAdapterMixin, ModelAdapter):
    family = "qwen3_next"
    model_types = ("Qwen3-Next-80B-A3B-Instruct", "Qwen3-Next-80B-A3B-Thinking")
    model_type_prefixes = ("Qwen3-Next-",)
    hf_model_types = ("qwen3_next",)
    float_linears = ("linear_attn.in_proj_ba", "mlp.shared_expert_gate")
    mtp_after_layers = False
    mtp_prefixes = ("mtp.",)
    family_smoothing_pairs = (("up-down", "mlp.shared_expert.up_proj", ("mlp.shared_expert.down_proj",)),)
