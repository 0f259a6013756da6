"""LongCat-Flash (LongCat-Flash-Chat): MLA attention, dual sub-layers and a shortcut MoE with identity experts.

A decoder layer is a unit holding two attention sub-layers (`self_attn.0/1`, MLA as in DeepSeek-V3), two dense
MLPs (`mlps.0/1`) and one MoE (`mlp`) that reads the first post-attention norm and is added after the second
sub-layer. The router (`mlp.router.classifier`, an nn.Linear in fp32) stays float: quantizing it changes which
experts tokens reach. Of the router's `n_routed_experts + zero_expert_num` choices, the last `zero_expert_num`
are zero-computation experts that return their input: they have no weights, so they are neither quantized nor
saved (`PerExpertMoE.identity_experts`). The MTP module ships as `model.mtp.*`, which transformers does not
build; it is copied to the output float (models/mtp.py). No rotation layout: a layer reads the
residual stream in four places and writes it in five, which the one-attention-one-MLP rotation does not describe.
"""

from __future__ import annotations

from modelslim_core.models.base import ModelAdapter
from modelslim_core.models.moe import MoEAdapterMixin
from modelslim_core.models.mtp import MtpLayersMixin


def _sublayer_pairs(index: int) -> tuple[tuple[str, str, tuple[str, ...]], ...]:
    attn = f"self_attn.{index}"
    pairs = (
        ("norm-linear", f"input_layernorm.{index}", (f"{attn}.q_a_proj", f"{attn}.kv_a_proj_with_mqa")),
        ("norm-linear", f"{attn}.q_a_layernorm", (f"{attn}.q_b_proj",)),
        ("up-down", f"mlps.{index}.up_proj", (f"mlps.{index}.down_proj",)),
    )
    if index == 1:  # post_attention_layernorm.0 also feeds the router: rescaling it would change routing
        pairs += (("norm-linear", "post_attention_layernorm.1", ("mlps.1.gate_proj", "mlps.1.up_proj")),)
    return pairs


class LongcatFlashAdapter(MtpLayersMixin, MoEAdapterMixin, ModelAdapter):
    family = "longcat_flash"
    model_types = ("LongCat-Flash-Chat",)
    model_type_prefixes = ("LongCat-Flash",)
    hf_model_types = ("longcat_flash",)
    float_linears = ("mlp.router.classifier",)
    mtp_after_layers = False
    mtp_prefixes = ("model.mtp.",)
    smoothing_patterns = ()
    family_smoothing_pairs = _sublayer_pairs(0) + _sublayer_pairs(1)
