"""Mixture-of-experts machinery shared by every MoE family (Qwen3-MoE, DeepSeek-V3, Qwen3-VL-MoE, ...).

transformers 5.x keeps a layer's routed experts as two fused 3-D parameters (`experts.gate_up_proj`
`[E, 2I, H]`, `experts.down_proj` `[E, H, I]`), while checkpoints on disk — and what vLLM-Ascend loads —
name every expert's linears separately (`mlp.experts.<e>.gate_proj.weight` ...). We rewrite each fused
experts module into a `PerExpertMoE`: a `ModuleList` of small gate/up/down MLPs with the same forward
signature. That one rewrite makes every expert an ordinary linear site for processors, makes the savers
write hub names without knowing about MoE, and makes the layer-wise skeleton's parameter names equal the
checkpoint keys, so lazy loading reads per-expert tensors directly (no fused<->split conversion needed).

Calibration: a router sends each token to a few experts, and on small calibration sets some experts get
no tokens at all, which would leave their static ranges / GPTQ Hessians empty. While any expert's linear
observes its inputs (a calibrating stand-in or a forward hook), `PerExpertMoE` runs EVERY token through
EVERY expert for the statistics but combines only the routed outputs, so the layer's output — and the
next unit's inputs — are exactly what the model computes. Real routing counts are kept per expert and
reported (`moe_report.py`), naming experts the router never chose and how they were calibrated.
Checkpoints that store experts fused are read per expert by `fused_expert_weights.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Persistent router buffers that checkpoints store as tensors (DeepSeek-V3's routing bias). transformers 5
#: holds them as buffers, which savers and lazy loaders (parameters only) would miss, so they become parameters.
CHECKPOINT_BUFFERS = ("e_score_correction_bias",)


class ClampedSwiGLU:
    """act(gate) * up with both sides clamped to `limit`, as DeepSeek-V4 and Step-3.5/3.7 experts compute it.

    `after_act`: Step clamps act(gate) from above; DeepSeek-V4 clamps gate before the activation. Up is
    clamped to [-limit, limit] in both. A plain class (not a closure) so units stay picklable for resume.
    """

    def __init__(self, act_fn: Callable, limit: float, after_act: bool):
        self.act_fn = act_fn
        self.limit = limit
        self.after_act = after_act

    def __call__(self, gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        up = up.clamp(min=-self.limit, max=self.limit)
        if self.after_act:
            return self.act_fn(gate).clamp(max=self.limit) * up
        return self.act_fn(gate.clamp(max=self.limit)) * up


#: Fused experts classes whose own `_apply_gate` is a clamped SwiGLU: class name -> clamp after the activation.
CLAMPED_SWIGLU_EXPERTS = {"DeepseekV4Experts": False, "Step3p7Experts": True}


class ExpertMLP(nn.Module):
    """One routed expert: down(act(gate(x)) * up(x)), with hub names gate_proj / up_proj / down_proj.

    `gating` replaces act(gate) * up for families that clamp it (ClampedSwiGLU)."""

    def __init__(self, gate_proj: nn.Linear, up_proj: nn.Linear, down_proj: nn.Linear, act_fn: Callable,
                 gating: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        super().__init__()
        self.gate_proj = gate_proj
        self.up_proj = up_proj
        self.down_proj = down_proj
        self.act_fn = act_fn
        self.gating = gating

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gating is not None:
            return self.down_proj(self.gating(self.gate_proj(x), self.up_proj(x)))
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


def _observes(module: nn.Module) -> bool:
    """Whether a module collects statistics from its inputs (calibrating stand-in or any forward hook)."""
    return bool(getattr(module, "observes_inputs", False) or module._forward_pre_hooks or module._forward_hooks)


class PerExpertMoE(nn.ModuleList):
    """Drop-in replacement of a fused transformers experts module: `forward(hidden, top_k_index, top_k_weights)`.

    `route_all_tokens`: None (default) routes all tokens through all experts exactly while some expert
    observes its inputs; True/False force it on/off. `identity_experts`: zero-computation experts the router
    may pick after the real ones (LongCat-Flash: indices `len(self)` and up); a token routed there contributes
    its own hidden state times the routing weight. They have no weights, so nothing quantizes or saves them.
    """

    def __init__(self, experts: list[ExpertMLP], identity_experts: int = 0):
        super().__init__(experts)
        self.route_all_tokens: bool | None = None
        self.identity_experts = identity_experts
        self.reset_routing_counts()

    @property
    def num_experts(self) -> int:
        return len(self)

    def reset_routing_counts(self) -> None:
        # Plain attributes (not buffers): they must survive the unit being moved to `meta` after saving.
        self.routed_tokens = [0] * len(self)
        self.seen_tokens = 0
        self.all_token_tokens = 0  # tokens pushed through every expert for statistics

    def _all_tokens_now(self) -> bool:
        return self.observing(range(len(self)))

    def forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        output = torch.zeros_like(hidden_states)
        all_tokens = self._all_tokens_now()
        self.seen_tokens += hidden_states.shape[0]
        if all_tokens:
            self.all_token_tokens += hidden_states.shape[0]
        self.add_expert_outputs(output, hidden_states, top_k_index, top_k_weights, range(len(self)), all_tokens)
        self.add_identity_outputs(output, hidden_states, top_k_index, top_k_weights)
        return output

    def observing(self, experts: range) -> bool:
        """Whether any of `experts` collects statistics now (decides the all-token mode of a forward)."""
        if self.route_all_tokens is not None:
            return self.route_all_tokens
        return any(_observes(module) for index in experts for module in self[index].modules())

    def add_expert_outputs(self, output: torch.Tensor, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                           top_k_weights: torch.Tensor, experts: range, all_tokens: bool) -> None:
        """Add the routed, weighted outputs of `experts` (in order) to `output`. A runner processing a layer's
        experts group by group calls this per group, in expert order, so the sum is the one `forward` makes."""
        for index in experts:
            expert = self[index]
            token, slot = torch.where(top_k_index == index)
            self.routed_tokens[index] += int(token.numel())
            if all_tokens:
                routed = expert(hidden_states)[token]  # every token feeds the statistics; routed rows are used
            elif token.numel():
                routed = expert(hidden_states[token])
            else:
                continue
            weighted = routed * top_k_weights[token, slot, None]
            output.index_add_(0, token, weighted.to(output.dtype))

    def add_identity_outputs(self, output: torch.Tensor, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                             top_k_weights: torch.Tensor) -> None:
        if self.identity_experts:
            token, slot = torch.where(top_k_index >= len(self))
            weighted = hidden_states[token] * top_k_weights[token, slot, None]
            output.index_add_(0, token, weighted.to(output.dtype))


# --- rewriting fused experts -------------------------------------------------------------------------------
def routes_tokens(root: nn.Module) -> bool:
    """Whether `root` holds routed experts: an expert that gets no token in a sample is never called in it."""
    return any(isinstance(module, PerExpertMoE) for module in root.modules())


def is_fused_experts(module: nn.Module) -> bool:
    """A transformers experts module holding `gate_up_proj` and `down_proj` as 3-D parameters."""
    gate_up = getattr(module, "gate_up_proj", None)
    down = getattr(module, "down_proj", None)
    return isinstance(gate_up, nn.Parameter) and isinstance(down, nn.Parameter) and gate_up.dim() == 3 and down.dim() == 3


def unsupported_layout(module: nn.Module) -> str | None:
    """Why a fused experts module cannot be split into plain gated MLPs (None: it can)."""
    from transformers.integrations import moe as hf_moe

    if not getattr(module, "has_gate", True):
        return "its experts have no gate projection"
    gate = getattr(type(module), "_apply_gate", None)
    if type(module).__name__ in CLAMPED_SWIGLU_EXPERTS:
        return None
    if gate is not None and gate is not getattr(hf_moe, "_default_apply_gate", gate):
        return f"{type(module).__name__} uses its own gating function"
    if not callable(getattr(module, "act_fn", None)):
        return "it has no act_fn"
    if getattr(module, "has_post_expert_norm", False):
        return "it normalises each expert's output"
    return None


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """An nn.Linear around an `[out, in]` slice (cloned: the fused tensor is dropped afterwards)."""
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, bias=bias is not None, device="meta", dtype=weight.dtype)
    linear.weight = nn.Parameter(weight.detach().clone().contiguous(), requires_grad=False)
    if bias is not None:
        linear.bias = nn.Parameter(bias.detach().clone().contiguous(), requires_grad=False)
    return linear


def split_fused_experts(fused: nn.Module) -> PerExpertMoE:
    """The per-expert equivalent of a fused experts module (works on `meta` skeletons too)."""
    gate_up, down = fused.gate_up_proj, fused.down_proj
    if getattr(fused, "is_transposed", False):  # stored [E, in, out]
        gate_up, down = gate_up.transpose(1, 2), down.transpose(1, 2)
    # Experts with weights: down_proj's count. LongCat-Flash allocates gate_up rows for its zero-computation
    # (identity) experts too, which the checkpoint does not store; those become `identity_experts`.
    num_experts = down.shape[0]
    total = getattr(fused, "total_experts", None)
    identity = (total if isinstance(total, int) else gate_up.shape[0]) - num_experts
    _, double_inter, _ = gate_up.shape
    inter = double_inter // 2
    interleaved = not getattr(fused, "is_concatenated", True)
    has_bias = getattr(fused, "has_bias", False)
    gate_up_bias = getattr(fused, "gate_up_proj_bias", None) if has_bias else None
    down_bias = getattr(fused, "down_proj_bias", None) if has_bias else None
    clamp_after_act = CLAMPED_SWIGLU_EXPERTS.get(type(fused).__name__)
    gating = None if clamp_after_act is None else ClampedSwiGLU(fused.act_fn, float(fused.limit), clamp_after_act)
    gate_rows = slice(0, None, 2) if interleaved else slice(0, inter)
    up_rows = slice(1, None, 2) if interleaved else slice(inter, None)
    experts = []
    for e in range(num_experts):
        experts.append(ExpertMLP(
            _linear(gate_up[e, gate_rows], None if gate_up_bias is None else gate_up_bias[e, gate_rows]),
            _linear(gate_up[e, up_rows], None if gate_up_bias is None else gate_up_bias[e, up_rows]),
            _linear(down[e], None if down_bias is None else down_bias[e]),
            fused.act_fn,
            gating,
        ))
    return PerExpertMoE(experts, identity_experts=max(identity, 0))


def unfuse_experts(model: nn.Module) -> list[str]:
    """Replace every fused experts module of `model` by a `PerExpertMoE`, in place; returns their names."""
    replaced: list[str] = []
    for name, module in list(model.named_modules()):
        if not is_fused_experts(module):
            continue
        reason = unsupported_layout(module)
        if reason is not None:
            logger.warning("%s keeps its fused experts (%s): they stay in float and are saved as FLOAT.", name, reason)
            continue
        parent_name, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attr, split_fused_experts(module))
        replaced.append(name)
    if replaced:
        logger.info("Split the fused experts of %d MoE layers into per-expert linears (e.g. %s.0.gate_proj).",
                    len(replaced), replaced[0])
    return replaced


def promote_checkpoint_buffers(model: nn.Module, names: tuple[str, ...] = CHECKPOINT_BUFFERS) -> list[str]:
    """Turn persistent buffers that checkpoints store (router score biases) into parameters, in place.

    Parameters are what savers write and lazy loaders read; on a `meta` skeleton the promoted parameter is
    put on `meta` as well so it is read from the checkpoint with its unit.
    """
    promoted: list[str] = []
    # The whole model decides: LongCat's router holds the bias beside a child classifier, no own parameter.
    skeleton = any(p.is_meta for p in model.parameters())
    for module_name, module in model.named_modules():
        for attr in names:
            buffer = module._buffers.get(attr)
            if buffer is None or attr in module._non_persistent_buffers_set:
                continue
            del module._buffers[attr]
            value = buffer.to("meta") if skeleton else buffer
            module._parameters[attr] = nn.Parameter(value, requires_grad=False)
            promoted.append(f"{module_name}.{attr}" if module_name else attr)
    return promoted


def prepare_moe_model(model: nn.Module) -> nn.Module:
    """The layout every MoE run and the reference runtime use: per-expert linears, router biases as parameters."""
    unfuse_experts(model)
    promote_checkpoint_buffers(model)
    return model


def expert_up_down_pairs(root: nn.Module) -> list[tuple[str, str, tuple[str, ...]]]:
    """("up-down", `<experts>.<e>.up_proj`, (`<experts>.<e>.down_proj`,)) for every routed expert under `root`."""
    pairs = []
    for path, module in root.named_modules():
        if isinstance(module, PerExpertMoE):
            base = f"{path}." if path else ""
            pairs += [("up-down", f"{base}{e}.up_proj", (f"{base}{e}.down_proj",)) for e in range(len(module))]
    return pairs


class MoEAdapterMixin:
    """Adds the MoE layout to any model adapter (text or multimodal): put it before the adapter base class.

    Both loading paths end in the per-expert layout, so processors, savers, layer-wise lazy loading and
    the run summary see one linear per expert.
    """

    def load_model(self, dtype: torch.dtype) -> nn.Module:
        return prepare_moe_model(super().load_model(dtype))

    def build_skeleton(self, dtype: torch.dtype) -> nn.Module:
        return prepare_moe_model(super().build_skeleton(dtype))

    #: Extra (kind, source, targets) smoothing pairs of the family, relative to a unit (e.g. MLA's norms).
    #: Norm -> expert pairs are never listed: the router reads the same normalised activations, so
    #: rescaling the norm would change routing.
    family_smoothing_pairs: tuple[tuple[str, str, tuple[str, ...]], ...] = ()

    def smoothing_subgraphs(self, unit) -> list:
        """The dense patterns (modules a layer lacks are skipped), the family's pairs, shared experts' up->down
        and every routed expert's up->down (docs/algorithms.md, "Smoothing")."""
        from modelslim_core.models.subgraphs import SubgraphPattern, attention_heads, resolve_subgraphs

        pairs = list(self.family_smoothing_pairs) + [("up-down", "mlp.shared_experts.up_proj", ("mlp.shared_experts.down_proj",))]
        pairs += expert_up_down_pairs(unit.module)
        extra = tuple(SubgraphPattern(kind, source, targets) for kind, source, targets in pairs)
        return super().smoothing_subgraphs(unit) + resolve_subgraphs(unit, extra, attention_heads(self.config_json))

    def unit_notes(self, unit) -> list[str]:
        from modelslim_core.models.moe_report import routing_report, routing_stats

        lines = super().unit_notes(unit)
        for stats in routing_stats(unit.module, unit.name):
            lines.extend(routing_report(stats))
        return lines

    def record_unit(self, unit, recorder) -> None:
        """Routed tokens per expert: under --debug (`expert_tokens`) and in quant_report.json (`expert_coverage`)."""
        from modelslim_core.models.moe_report import routing_stats

        for stats in routing_stats(unit.module, unit.name):  # per rank under data parallelism: summed by gather
            for expert, count in enumerate(stats.routed_tokens):
                recorder.debug("expert_tokens", f"{stats.name}.{expert}", count, combine="sum")
                recorder.stat("expert_coverage", f"{stats.name}.{expert}", count, combine="sum")  # 0: unrouted
