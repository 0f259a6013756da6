"""Where the pieces QuaRot rotates sit in a model: the residual stream's readers and writers.

The dense families (Qwen2/2.5, Qwen3, Llama and any transformers decoder with the same layout) name them
alike: per decoder layer `input_layernorm` → `self_attn.{q,k,v}_proj`, `self_attn.o_proj` writes back;
`post_attention_layernorm` → `mlp.{gate,up}_proj`, `mlp.down_proj` writes back; at model level the input
embeddings write the stream, the final norm and the LM head read it. A family with other names sets
`rotation_layout` on its adapter to a `DecoderRotationLayout` with its own names.

A mixture-of-experts layer (its `mlp.experts` split per expert, models/moe.py) is read by the router and by
every expert's and shared expert's gate/up projection, and written by their down projections (`mlp_sites`).
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
    #: The per-head value projection that takes the head_dim rotation; None when values come from elsewhere
    #: (MLA decompresses them from a latent), which leaves attention without that rotation.
    value: str | None = "self_attn.v_proj"
    attn_output: str = "self_attn.o_proj"
    mlp_norm: str = "post_attention_layernorm"
    mlp_inputs: tuple[str, ...] = ("mlp.gate_proj", "mlp.up_proj")
    mlp_output: str = "mlp.down_proj"
    final_norm: str = "model.norm"
    experts: str = "mlp.experts"
    mlp: str = "mlp"
    #: Model-level linears (fnmatch patterns) whose outputs enter the residual stream besides the token
    #: embeddings: a VLM's tower mergers, whose features replace or are added to token positions. They are
    #: rotated like the embeddings, or image positions would carry unrotated features.
    stream_writers: tuple[str, ...] = ()


#: Leaf names inside an MoE block: modules that read the block's input, and modules that write its output.
MOE_READERS = frozenset({"gate", "gate_proj", "up_proj", "shared_expert_gate"})
MOE_WRITERS = frozenset({"down_proj"})


@dataclass
class MlpSites:
    """The modules of one decoder layer's MLP that read (W·Q) and write (Qᵀ·W) the residual stream."""

    readers: list[nn.Module]
    writers: list[nn.Module]
    dense: bool


def mlp_sites(layer: nn.Module, layout: DecoderRotationLayout, where: str, hidden_size: int) -> MlpSites:
    """The dense MLP's paths, or for an MoE layer every reader and writer found by name under `layout.mlp`
    (a weighted module that is neither is refused: rotating around it would change the model)."""
    from modelslim_core.models.moe import PerExpertMoE  # noqa: PLC0415 - models import the rotation layout

    try:
        experts = layer.get_submodule(layout.experts)
    except AttributeError:
        experts = None
    if not isinstance(experts, PerExpertMoE):
        readers = [submodule(layer, path, where) for path in layout.mlp_inputs]
        return MlpSites(readers, [submodule(layer, layout.mlp_output, where)], dense=True)
    sites = MlpSites([], [], dense=False)
    for name, module in submodule(layer, layout.mlp, where).named_modules():
        weight = module._parameters.get("weight")
        if weight is None:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if leaf in MOE_READERS and weight.shape[-1] == hidden_size:
            sites.readers.append(module)
        elif leaf in MOE_WRITERS and weight.shape[0] == hidden_size:
            sites.writers.append(module)
        else:
            raise ModelError(
                f"{where}.{layout.mlp}.{name} is neither a reader of the MoE block's input (router, gate/up "
                "projections) nor a writer of its output (down projections), so rotation cannot keep it exact.",
                "quantize this model without quarot/adapt_rotation, or give its adapter a rotation_layout.",
            )
    return sites


def layout_of(adapter) -> DecoderRotationLayout:
    return getattr(adapter, "rotation_layout", None) or DecoderRotationLayout()


def rotates_unit(adapter, unit) -> bool:
    """Rotation acts on decoder layers; a VLM's tower units (vision/audio encoders) keep their own basis."""
    is_tower = getattr(adapter, "is_tower", None)
    return not (callable(is_tower) and is_tower(unit))


def submodule(root: nn.Module, path: str, where: str) -> nn.Module:
    """`root.get_submodule(path)` with an error that says which model part QuaRot could not find."""
    try:
        return root.get_submodule(path)
    except AttributeError:
        raise ModelError(
            f"{where}.{path} does not exist, so this model does not have the decoder layout rotation expects "
            "(input_layernorm → self_attn.q/k/v_proj, o_proj; post_attention_layernorm → mlp.gate/up_proj, down_proj).",
            "rotation supports the Llama-style families, their MoE variants and DeepSeek's MLA; another family "
            "needs a `rotation_layout` on its adapter.",
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
