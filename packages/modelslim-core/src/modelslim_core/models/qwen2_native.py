"""A Qwen2-family causal LM written with torch alone, giving the same bits as transformers' sdpa Qwen2 model.

Why it exists: loading transformers' Qwen2 model code drags in its model base, activation table and attention
integrations, and with them torch._dynamo and torch.distributed.tensor -- about 4 s of CPU out of the README main
job's 10 s budget, spent on machinery a calibration run never touches. What this module shares with transformers
are facts, not code: the checkpoint's module paths and class names (processors, savers and taps find their sites by
them), and the arithmetic a Qwen2 layer performs, in an order that yields identical floating-point results
(tests/families/test_qwen2_native.py compares layers, logits and module trees; the README main job's checkpoint
digest pins the bytes end to end).

Scope: default rotary positions, full causal attention in every layer, SiLU gated MLPs and unpadded batches.
`native_config_ok` recognises such a config.json; for anything else the adapter keeps transformers' class
(models/qwen2.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

#: config.json keys that announce a feature outside this module's scope.
_UNSUPPORTED_KEYS = ("quantization_config", "auto_map")

#: Largest head size for which sdpa is handed the un-repeated KV heads (`enable_gqa`); larger heads get the KV
#: heads repeated first. The same threshold as transformers' sdpa path, so both pick the same kernel.
_GQA_MAX_HEAD_DIM = 256


def native_config_ok(config_json: dict[str, Any]) -> bool:
    """True when `config_json` is a plain Qwen2 causal LM, i.e. inside the scope listed in the module doc."""
    rope = config_json.get("rope_parameters") or config_json.get("rope_scaling") or {}
    rope_kind = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else None
    attention_kinds = config_json.get("layer_types") or ["full_attention"]
    return (
        config_json.get("model_type") == "qwen2"
        and (config_json.get("architectures") or ["Qwen2ForCausalLM"]) == ["Qwen2ForCausalLM"]
        and rope_kind == "default"
        and not config_json.get("use_sliding_window", False)
        and set(attention_kinds) == {"full_attention"}
        and config_json.get("hidden_act", "silu") == "silu"
        and config_json.get("attn_implementation", "sdpa") == "sdpa"
        and not any(key in config_json for key in _UNSUPPORTED_KEYS)
    )


def _head_size(config: Any) -> int:
    """Channels per attention head: explicit in newer configs, else hidden size split evenly over the heads."""
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


# --- rotary positions ----------------------------------------------------------------------------------------


def _rope_frequencies(config: Any) -> torch.Tensor:
    """One angular frequency per pair of head channels, theta^(-2i/d), computed in float32 as 1 / theta^(2i/d)
    (the reciprocal form is the one transformers uses, so the tables match its tables bit for bit)."""
    size = _head_size(config)
    exponents = torch.arange(0, size, 2, dtype=torch.float) / size
    return 1.0 / (config.rope_parameters["rope_theta"] ** exponents)


class Qwen2RotaryEmbedding(nn.Module):
    """Builds the cos/sin tables once per forward; every layer rotates its queries and keys with them."""

    def __init__(self, config: Any):
        super().__init__()
        frequencies = _rope_frequencies(config)
        # Neither buffer is saved. `original_inv_freq` is kept so `buffers()` lists what transformers' module
        # lists, which lets tests compare the two models buffer by buffer.
        self.register_buffer("inv_freq", frequencies, persistent=False)
        self.register_buffer("original_inv_freq", frequencies.clone(), persistent=False)

    @torch.no_grad()
    def forward(self, like: torch.Tensor, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each [batch, positions, head size] in `like`'s dtype; angles are formed in float32."""
        frequencies = self.inv_freq.to(device=like.device, dtype=torch.float)
        angles = position_ids[..., None].float() * frequencies
        both_halves = torch.cat((angles, angles), dim=-1)
        return both_halves.cos().to(like.dtype), both_halves.sin().to(like.dtype)


def _rotate(states: torch.Tensor) -> torch.Tensor:
    """The rotation by 90 degrees that pairs channel i with channel i + d/2: (a, b) -> (-b, a)."""
    first, second = states.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def _with_positions(states: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position encoding of per-head `states` [batch, heads, positions, d]; `cos`/`sin` broadcast over heads."""
    return states * cos + _rotate(states) * sin


# --- attention -----------------------------------------------------------------------------------------------


def grouped_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                 **_unused: Any) -> tuple[torch.Tensor, None]:
    """Causal scaled-dot-product attention with grouped KV heads; returns [batch, positions, heads, d].

    It takes the calling convention of transformers' attention registry (module first, then Q/K/V and the mask,
    options by keyword), because a tapped run swaps in a registry function at the same call site. It chooses
    sdpa's arguments exactly as transformers' sdpa path does for these inputs, since a different choice (GQA flag
    vs. repeated heads, explicit vs. implied causality) can pick another kernel and change the last bits.
    """
    options: dict[str, Any] = {}
    per_kv_head = module.num_key_value_groups
    if per_kv_head > 1:
        if attention_mask is None and key.shape[-1] == value.shape[-1] <= _GQA_MAX_HEAD_DIM:
            options["enable_gqa"] = True
        else:
            key = key.repeat_interleave(per_kv_head, dim=1)
            value = value.repeat_interleave(per_kv_head, dim=1)
    # a single query position attends to everything before it anyway; sdpa's causal flag is for prefixes
    causal = module.is_causal and attention_mask is None and query.shape[2] > 1
    mixed = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                           scale=scaling, is_causal=causal, **options)
    return mixed.transpose(1, 2).contiguous(), None


def attention_function(config: Any) -> Any:
    """The kernel a Qwen2Attention calls: `grouped_sdpa` normally. KV-cache and FA3 quantization tap attention by
    registering another implementation in transformers' registry and naming it in `config._attn_implementation`
    (attention/taps.py); only then is that registry imported and consulted."""
    implementation = getattr(config, "_attn_implementation", None) or "sdpa"
    if implementation == "sdpa":
        return grouped_sdpa
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS  # noqa: PLC0415 - tapped runs only

    return ALL_ATTENTION_FUNCTIONS[implementation]


class Qwen2Attention(nn.Module):
    """Q/K/V projections (with bias), rotary positions on Q and K, the attention kernel, then o_proj.

    Attributes besides the projections are read from outside: `config` and `head_dim` by attention taps and site
    discovery, `num_key_value_groups` and `is_causal` by transformers' kernels in tapped runs (`layer_idx` by
    those that key a cache by layer).
    """

    def __init__(self, config: Any, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = _head_size(config)
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.is_causal = True
        self.scaling = self.head_dim**-0.5
        query_width = config.num_attention_heads * self.head_dim
        kv_width = config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(config.hidden_size, query_width, bias=True)
        self.k_proj = nn.Linear(config.hidden_size, kv_width, bias=True)
        self.v_proj = nn.Linear(config.hidden_size, kv_width, bias=True)
        self.o_proj = nn.Linear(query_width, config.hidden_size, bias=False)

    def _split_heads(self, projection: nn.Linear, hidden_states: torch.Tensor) -> torch.Tensor:
        """[batch, positions, hidden] -> [batch, heads, positions, head size] through `projection`."""
        return projection(hidden_states).unflatten(-1, (-1, self.head_dim)).transpose(1, 2)

    def forward(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor],
                attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
        cos, sin = (table.unsqueeze(1) for table in position_embeddings)  # broadcast over the head axis
        query = _with_positions(self._split_heads(self.q_proj, hidden_states), cos, sin)
        key = _with_positions(self._split_heads(self.k_proj, hidden_states), cos, sin)
        value = self._split_heads(self.v_proj, hidden_states)
        for cache_option in ("past_key_values", "use_cache"):  # no KV cache during calibration
            kwargs.pop(cache_option, None)
        kernel = attention_function(self.config)
        per_position, _ = kernel(self, query, key, value, attention_mask,
                                 dropout=self.config.attention_dropout if self.training else 0.0,
                                 scaling=self.scaling, **kwargs)
        heads_joined = per_position.reshape(*hidden_states.shape[:-1], -1).contiguous()
        return self.o_proj(heads_joined), None


# --- feed-forward, normalisation, layers ---------------------------------------------------------------------


class SiLUActivation(nn.Module):
    """SiLU as a module; the class name is the one transformers' checkpoints show at `mlp.act_fn`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


class Qwen2MLP(nn.Module):
    """Gated feed-forward: down(silu(gate(x)) * up(x)). gate_proj runs first, which partial forwards rely on."""

    def __init__(self, config: Any):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act_fn = SiLUActivation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated = self.act_fn(self.gate_proj(x))
        return self.down_proj(gated * self.up_proj(x))


class Qwen2RMSNorm(nn.Module):
    """Root-mean-square norm. The statistic and the scaling happen in float32; the result is cast back to the
    input's dtype before the learned weight multiplies it (in the weight's dtype)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        wide = hidden_states.to(torch.float32)
        mean_square = wide.pow(2).mean(-1, keepdim=True)
        normalized = wide * torch.rsqrt(mean_square + self.variance_epsilon)
        return self.weight * normalized.to(hidden_states.dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class Qwen2DecoderLayer(nn.Module):
    """Pre-norm block: x + attention(norm(x)), then that plus mlp(norm(that))."""

    def __init__(self, config: Any, layer_idx: int):
        super().__init__()
        self.self_attn = Qwen2Attention(config, layer_idx)
        self.mlp = Qwen2MLP(config)
        self.input_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None, **kwargs: Any) -> torch.Tensor:
        """Keyword names follow transformers' decoder-layer convention: runners replay captured layer calls."""
        attended, _ = self.self_attn(hidden_states=self.input_layernorm(hidden_states), attention_mask=attention_mask,
                                     position_embeddings=position_embeddings, **kwargs)
        after_attention = hidden_states + attended
        return after_attention + self.mlp(self.post_attention_layernorm(after_attention))


# --- whole model -------------------------------------------------------------------------------------------


class Qwen2Model(nn.Module):
    """Embedding, decoder layers, final norm; `rotary_emb` makes the position tables all layers share."""

    def __init__(self, config: Any, meta: bool = False):
        """`meta=True` gives the embedding an uninitialised weight on the meta device: initialising a meta
        tensor would import torch._dynamo (the very import this module avoids), and the loader overwrites the
        weight with the checkpoint's anyway."""
        super().__init__()
        self.config = config
        placeholder = torch.empty(config.vocab_size, config.hidden_size, device="meta") if meta else None
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id,
                                         _weight=placeholder)
        self.layers = nn.ModuleList(Qwen2DecoderLayer(config, index) for index in range(config.num_hidden_layers))
        self.norm = Qwen2RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = Qwen2RotaryEmbedding(config)

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                **_unused: Any) -> torch.Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass either input_ids or inputs_embeds, not both and not neither")
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            raise ValueError("this Qwen2 model runs unpadded batches only (calibration samples are one text each)")
        hidden = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        if position_ids is None:
            position_ids = torch.arange(hidden.shape[1], device=hidden.device)[None]
        tables = self.rotary_emb(hidden, position_ids)
        # With no padding the mask carries nothing beyond causality, which the kernel applies itself; passing
        # None keeps sdpa on the same (implicitly causal) kernel transformers uses for such batches.
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=None, position_embeddings=tables, position_ids=position_ids)
        return self.norm(hidden)


class CausalLMOutput(dict):
    """What callers read from a causal LM's output: `.logits`, also reachable as `["logits"]` and `[0]`."""

    def __init__(self, logits: torch.Tensor):
        super().__init__(logits=logits)
        self.logits = logits

    def __getitem__(self, key: Any) -> Any:
        return self.logits if key == 0 else super().__getitem__(key)


class Qwen2ForCausalLM(nn.Module):
    """`model` plus the vocabulary projection `lm_head` (shared with the embedding when the config ties them)."""

    base_model_prefix = "model"

    def __init__(self, config: Any, meta: bool = False):
        super().__init__()
        self.config = config
        self.model = Qwen2Model(config, meta=meta)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Re-share the head with the embedding; the loader calls it again after swapping in real weights."""
        if getattr(self.config, "tie_word_embeddings", False):
            self.lm_head.weight = self.model.embed_tokens.weight

    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None,
                **_unused: Any) -> CausalLMOutput:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            inputs_embeds=inputs_embeds)
        return CausalLMOutput(self.lm_head(hidden))
