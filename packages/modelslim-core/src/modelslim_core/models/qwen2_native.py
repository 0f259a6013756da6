"""Qwen2-family causal LM built from torch alone, bit-identical to transformers' `Qwen2ForCausalLM` (sdpa).

Why: importing transformers' model code (`modeling_qwen2`) pulls its model base, activations and attention
integrations, and through them torch._dynamo (hub kernels, flash attention) and torch.distributed.tensor
(checkpoint sharding): about 4 s CPU of the README's 10 s goal for a run that uses none of it. This module has
the same module tree, parameter names and the same tensor operations in the same order, so a decoder layer
gives the same bits as transformers' and a quantized checkpoint the same bytes (tests/families/test_qwen2_native.py
pins both). It covers only what plain Qwen2 checkpoints use: default rotary positions, full attention in every
layer, SiLU MLPs, batches without padding; `native_config_ok` says when a config.json is such a model, and the
adapter keeps transformers' class for everything else (models/qwen2.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: config.json keys whose presence means a feature this module does not implement.
_UNSUPPORTED_KEYS = ("quantization_config", "auto_map")


def native_config_ok(config_json: dict[str, Any]) -> bool:
    """Whether `config_json` describes a model this module reproduces exactly (see the module doc)."""
    rope = config_json.get("rope_parameters") or config_json.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else None
    layer_types = config_json.get("layer_types") or ["full_attention"]
    return (
        config_json.get("model_type") == "qwen2"
        and (config_json.get("architectures") or ["Qwen2ForCausalLM"]) == ["Qwen2ForCausalLM"]
        and rope_type == "default"
        and not config_json.get("use_sliding_window", False)
        and all(kind == "full_attention" for kind in layer_types)
        and config_json.get("hidden_act", "silu") == "silu"
        and config_json.get("attn_implementation", "sdpa") == "sdpa"
        and not any(key in config_json for key in _UNSUPPORTED_KEYS)
    )


class SiLUActivation(nn.Module):
    """transformers' ACT2FN["silu"]: F.silu as a module (same name, so module trees match)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return nn.functional.silu(input)


class Qwen2MLP(nn.Module):
    def __init__(self, config: Any):
        super().__init__()
        self.config = config
        self.hidden_size = config.hidden_size
        self.intermediate_size = config.intermediate_size
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=False)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=False)
        self.act_fn = SiLUActivation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def default_inv_freq(config: Any) -> torch.Tensor:
    """Rotary inverse frequencies of the default rope (float32, as transformers computes them)."""
    base = config.rope_parameters["rope_theta"]
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))


class Qwen2RotaryEmbedding(nn.Module):
    def __init__(self, config: Any):
        super().__init__()
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings
        self.config = config
        self.rope_type = "default"
        self.attention_scaling = 1.0
        inv_freq = default_inv_freq(config)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.register_buffer("original_inv_freq", inv_freq.clone(), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                         sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    cos = cos.unsqueeze(1)
    sin = sin.unsqueeze(1)
    return (q * cos) + (rotate_half(q) * sin), (k * cos) + (rotate_half(k) * sin)


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def sdpa_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                   **_kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' sdpa_attention_forward on CPU/CUDA/NPU for what Qwen2 passes it (no cache, no bias)."""
    sdpa_kwargs = {}
    q_length = query.shape[2]
    if module.num_key_value_groups > 1:
        if attention_mask is None and key.shape[-1] == value.shape[-1] <= 256:
            sdpa_kwargs["enable_gqa"] = True
        else:
            key = repeat_kv(key, module.num_key_value_groups)
            value = repeat_kv(value, module.num_key_value_groups)
    is_causal = q_length > 1 and attention_mask is None and module.is_causal
    attn_output = nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=is_causal,
        **sdpa_kwargs)
    return attn_output.transpose(1, 2).contiguous(), None


def attention_function(config: Any) -> Any:
    """sdpa is ours; another implementation set on the config (the attention taps of KV-cache quantization
    register one, attention/taps.py) is looked up where transformers keeps them."""
    name = getattr(config, "_attn_implementation", None) or "sdpa"
    if name == "sdpa":
        return sdpa_attention
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # noqa: PLC0415 - only for tapped runs

    return ALL_ATTENTION_FUNCTIONS[name]


class Qwen2Attention(nn.Module):
    def __init__(self, config: Any, layer_idx: int):
        super().__init__()
        self.layer_type = "full_attention"
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        self.q_proj = nn.Linear(config.hidden_size, config.num_attention_heads * self.head_dim, bias=True)
        self.k_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=True)
        self.v_proj = nn.Linear(config.hidden_size, config.num_key_value_heads * self.head_dim, bias=True)
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, config.hidden_size, bias=False)
        self.sliding_window = None

    def forward(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        kwargs.pop("past_key_values", None)
        kwargs.pop("use_cache", None)
        attn_output, attn_weights = attention_function(self.config)(
            self, query_states, key_states, value_states, attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout, scaling=self.scaling,
            sliding_window=self.sliding_window, **kwargs)
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        return self.o_proj(attn_output), attn_weights


class Qwen2RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class Qwen2DecoderLayer(nn.Module):
    def __init__(self, config: Any, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = Qwen2Attention(config=config, layer_idx=layer_idx)
        self.mlp = Qwen2MLP(config)
        self.input_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, past_key_values: Any = None, use_cache: bool | None = False,
                position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None, **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        hidden_states, _ = self.self_attn(hidden_states=hidden_states, attention_mask=attention_mask,
                                          position_ids=position_ids, position_embeddings=position_embeddings, **kwargs)
        hidden_states = residual + hidden_states
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        return residual + hidden_states


class Qwen2Model(nn.Module):
    def __init__(self, config: Any, meta: bool = False):
        """`meta`: the embedding is created on `meta` without initialising it (initialising a meta tensor
        imports torch._dynamo, the cost this module exists to avoid); the caller reads the real weights."""
        super().__init__()
        self.config = config
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        weight = torch.empty(config.vocab_size, config.hidden_size, device="meta") if meta else None
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx, _weight=weight)
        self.layers = nn.ModuleList([Qwen2DecoderLayer(config, i) for i in range(config.num_hidden_layers)])
        self.norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(config=config)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                **kwargs: Any) -> torch.Tensor:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("this Qwen2 model runs unpadded batches only (calibration samples are one text each)")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if position_ids is None:
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device).unsqueeze(0)
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids)
        for decoder_layer in self.layers[: self.config.num_hidden_layers]:
            # transformers' causal mask is None for an unpadded batch under sdpa (sdpa's is_causal does it)
            hidden_states = decoder_layer(hidden_states, attention_mask=None, position_embeddings=position_embeddings,
                                          position_ids=position_ids, past_key_values=None, use_cache=False)
        return self.norm(hidden_states)


class CausalLMOutput(dict):
    """The part of transformers' CausalLMOutputWithPast callers read: `.logits` (also `["logits"]`, `[0]`)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__(logits=logits)
        self.logits = logits

    def __getitem__(self, key: Any) -> Any:
        return self.logits if key == 0 else super().__getitem__(key)


class Qwen2ForCausalLM(nn.Module):
    base_model_prefix = "model"

    def __init__(self, config: Any, meta: bool = False):
        super().__init__()
        self.config = config
        self.model = Qwen2Model(config, meta=meta)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        if getattr(self.config, "tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                use_cache: bool | None = None, **kwargs: Any) -> CausalLMOutput:
        hidden_states = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                   inputs_embeds=inputs_embeds)
        return CausalLMOutput(self.lm_head(hidden_states))
