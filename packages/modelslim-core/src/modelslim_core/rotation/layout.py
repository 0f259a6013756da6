"""Where the pieces QuaRot rotates sit in a model: the residual stream's readers and writers.

The dense families (Qwen2/2.5, Qwen3, Llama and any transformers decoder with the same layout) name them
alike: per decoder layer `input_layernorm` → `self_attn.{q,k,v}_proj`, `self_attn.o_proj` writes back;
`post_attention_layernorm` → `mlp.{gate,up}_proj`, `mlp.down_proj` writes back; at model level the input
embeddings write the stream, the final norm and the LM head read it. A family with other names sets
`rotation_layout` on its adapter to a `DecoderRotationLayout` with its own names.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from modelslim_core.errors import ModelError


@dataclass(frozen=True)
class DecoderRotationLayout:
    """Module paths relative to a decoder layer, and model-level paths."""

    attn_norm: str = "input_layernorm"
    attn_inputs: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    value: str = "self_attn.v_proj"
    attn_output: str = "self_attn.o_proj"
    mlp_norm: str = "post_attention_layernorm"
    mlp_inputs: tuple[str, ...] = ("mlp.gate_proj", "mlp.up_proj")
    mlp_output: str = "mlp.down_proj"
    final_norm: str = "model.norm"


def layout_of(adapter) -> DecoderRotationLayout:
    return getattr(adapter, "rotation_layout", None) or DecoderRotationLayout()


def submodule(root: nn.Module, path: str, where: str) -> nn.Module:
    """`root.get_submodule(path)` with an error that says which model part QuaRot could not find."""
    try:
        return root.get_submodule(path)
    except AttributeError:
        raise ModelError(
            f"{where}.{path} does not exist, so this model does not have the decoder layout rotation expects "
            "(input_layernorm → self_attn.q/k/v_proj, o_proj; post_attention_layernorm → mlp.gate/up_proj, down_proj).",
            "rotation supports the dense Llama-style families; another family needs a `rotation_layout` on its adapter.",
        ) from None


@dataclass(frozen=True)
class AttentionShape:
    """Head geometry from the model config (head_dim may be explicit, as in Qwen3)."""

    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int


def attention_shape(model: nn.Module) -> AttentionShape:
    config = getattr(model.config, "text_config", None) or model.config
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return AttentionShape(
        hidden_size=config.hidden_size,
        num_heads=heads,
        num_kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        intermediate_size=config.intermediate_size,
    )
