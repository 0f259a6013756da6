"""The QuaRot transform of a dense decoder model, split into its model-level and per-layer parts.

QuaRot multiplies the whole residual stream by an orthogonal Q (hidden size): embeddings write h·Q, every
reader of the stream (q/k/v, gate/up, LM head) takes W·Q, every writer (o_proj, down_proj) produces its
output times Q (W ← Qᵀ·W). Norms are RMSNorms with unit scale after their γ is folded into the readers, and
an RMSNorm commutes with Q, so the logits do not change. Inside attention a head_dim rotation Q_hd is fused
into v_proj's output and o_proj's input per head. `online` adds the run-time rotations of online.py.

The model-level part (untie + final norm into the LM head + rotate embeddings and LM head) runs once in
`pre_run`; a decoder layer is transformed when the runner enters it, so a layer-wise run (weights still on
`meta` until then) transforms each layer as it is loaded. Rotations are exact in float; quantizing the
rotated weights/activations afterwards is where the gain shows (outlier channels are spread over all).
"""

from __future__ import annotations

import logging
from fnmatch import fnmatchcase
from dataclasses import dataclass, field

import torch
from torch import nn

from modelslim_core.rotation import export, online
from modelslim_core.rotation.fusing import computes_rms_norm, fuse_norm_into_linears, rotate_input, rotate_output
from modelslim_core.rotation.hadamard import hidden_rotation, random_hadamard
from modelslim_core.errors import ModelError
from modelslim_core.rotation.layout import DecoderRotationLayout, attention_shape, layout_of, mlp_sites, submodule
from modelslim_core.runtime.context import RunContext
from modelslim_core.runtime.unit import Unit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QuarotSettings:
    block_size: int = -1
    online: bool = False
    down_proj_online_layers: tuple[int, ...] = field(default_factory=tuple)
    max_tp_size: int = 4
    export_extra_info: bool = True


def module_name(model: nn.Module, target: nn.Module) -> str:
    return next(name for name, module in model.named_modules() if module is target)


def stream_writers(model: nn.Module, layout: DecoderRotationLayout) -> list[nn.Module]:
    """The model-level linears `layout.stream_writers` names (a VLM's mergers); a pattern matching nothing is
    an error, since the features it should rotate would then enter the rotated stream unrotated."""
    found: list[nn.Module] = []
    for pattern in layout.stream_writers:
        matches = [m for n, m in model.named_modules() if fnmatchcase(n, pattern) and isinstance(getattr(m, "weight", None), torch.Tensor)]
        if not matches:
            raise ModelError(f"{type(model).__name__} has no module matching {pattern!r}, which writes tower features "
                             "into the language model's residual stream and must be rotated with it.",
                             "the adapter's rotation_layout.stream_writers does not fit this checkpoint; report it.")
        found += matches
    return found


def materialize(context: RunContext, model: nn.Module, modules: list[nn.Module]) -> None:
    """Read the parameters of model-level modules still on `meta` (a layer-wise run) from the checkpoint; they
    then stay loaded, so the savers write the transformed values instead of re-reading the source."""
    if context.weights is None:
        return
    names = []
    for module in modules:
        prefix = module_name(model, module)
        names += [f"{prefix}.{n}" for n, p in module.named_parameters(recurse=False) if p.is_meta]
    context.weights.materialize(model, names=names)


def fuse_rms_norm(norm: nn.Module, readers: list[nn.Module], name: str) -> None:
    """fuse_norm_into_linears, after checking the norm is one a rotation can pass through."""
    if not computes_rms_norm(norm):
        raise ModelError(
            f"{name} ({type(norm).__name__}) is not an RMSNorm with a plain scale (it subtracts the mean, or "
            "scales by 1 + γ), so rotating the residual stream around it would change the model.",
            "quantize this model without quarot/adapt_rotation (smoothing processors work on it).",
        )
    fuse_norm_into_linears(norm, readers)


def fuse_layer_norms(layer: nn.Module, layout, where: str, mlp_readers: list[nn.Module]) -> None:
    """Fold a decoder layer's two RMSNorm scales into the modules that read them (both norms become 1)."""
    attn_readers = [submodule(layer, path, where) for path in layout.attn_inputs]
    fuse_rms_norm(submodule(layer, layout.attn_norm, where), attn_readers, f"{where}.{layout.attn_norm}")
    fuse_rms_norm(submodule(layer, layout.mlp_norm, where), mlp_readers, f"{where}.{layout.mlp_norm}")


class QuarotTransform:
    """Applies QuaRot with a given hidden-size rotation (plain QuaRot: a random Hadamard; adapt_rotation: the
    learned refinement of it)."""

    def __init__(self, context: RunContext, settings: QuarotSettings, hidden: torch.Tensor | None = None):
        self.context = context
        self.settings = settings
        self.hidden = hidden
        self.layout = layout_of(context.adapter)
        self.head_rotation: torch.Tensor | None = None
        self.heads: torch.Tensor | None = None
        self.kronecker: tuple[torch.Tensor, torch.Tensor] | None = None

    def _build(self, model: nn.Module) -> None:
        shape = attention_shape(model)
        if self.hidden is None:
            self.hidden = hidden_rotation(shape.hidden_size, self.settings.block_size)
        elif self.hidden.shape != (shape.hidden_size, shape.hidden_size):
            raise ValueError(f"hidden rotation {tuple(self.hidden.shape)} does not match hidden size {shape.hidden_size}")
        if self.layout.value is not None:
            self.head_rotation = random_hadamard(shape.head_dim, what="head_dim rotation")
        layers = getattr(getattr(model.config, "text_config", None) or model.config, "num_hidden_layers", None)
        beyond = [i for i in self.settings.down_proj_online_layers if layers is not None and i >= layers]
        if beyond:
            logger.warning("down_proj_online_layers %s are beyond this model's %d layers and are ignored.", beyond, layers)
        if self.settings.online:
            self.heads = online.heads_rotation(shape.num_heads, self.settings.max_tp_size)
            if self.settings.down_proj_online_layers:
                self.kronecker = online.kronecker_rotation(shape.intermediate_size, self.settings.max_tp_size)

    @torch.no_grad()
    def apply_model(self, model: nn.Module) -> None:
        self._build(model)  # no clearing of earlier records: a resumed run keeps the finished layers' ones
        embed = model.get_input_embeddings()
        head = model.get_output_embeddings()
        norm = submodule(model, self.layout.final_norm, type(model).__name__)
        materialize(self.context, model, [embed, norm] + ([head] if head is not None else []))
        if head is not None:
            if head.weight is embed.weight or getattr(model.config, "tie_word_embeddings", False):
                # a tied head would be rotated twice and cannot carry the final norm's scale: untie it
                head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=False)
                model.config.tie_word_embeddings = False
                export.record_untied(self.context.state)
            fuse_rms_norm(norm, [head], self.layout.final_norm)
            rotate_input(head, self.hidden)
        rotate_input(embed, self.hidden)
        writers = stream_writers(model, self.layout)
        materialize(self.context, model, writers)
        for writer in writers:
            rotate_output(writer, self.hidden)
        self.context.recorder.debug("rotation_matrices", "hidden", self.hidden)
        self.context.recorder.debug("rotation_matrices", "head_dim", self.head_rotation)
        if self.settings.export_extra_info:
            export.record_global_rotation(self.context.state, self.hidden)

    @torch.no_grad()
    def apply_unit(self, unit: Unit) -> None:
        layer, layout, where = unit.module, self.layout, unit.name
        mlp = mlp_sites(layer, layout, where, self.hidden.shape[0])
        fuse_layer_norms(layer, layout, where, mlp.readers)
        out = submodule(layer, layout.attn_output, where)
        for reader in [submodule(layer, path, where) for path in layout.attn_inputs] + mlp.readers:
            rotate_input(reader, self.hidden)
        for writer in [out] + mlp.writers:
            rotate_output(writer, self.hidden)
        if layout.value is not None:  # block-diagonal: each head's values rotate by Q_hd
            rotate_output(submodule(layer, layout.value, where), self.head_rotation)
            rotate_input(out, self.head_rotation)
        if self.heads is not None:
            self._install(f"{where}.{layout.attn_output}", out, online.InputRotation(heads=self.heads))
        if self.kronecker is not None and unit.index in self.settings.down_proj_online_layers:
            if not mlp.dense:
                raise ModelError(
                    f"down_proj_online_layers lists layer {unit.index}, but {where} is a mixture-of-experts layer; "
                    "the online Kronecker rotation is for a dense MLP's down_proj.",
                    "list only dense layers in down_proj_online_layers.",
                )
            down = mlp.writers[0]
            self._install(f"{where}.{layout.mlp_output}", down, online.InputRotation(kronecker=self.kronecker))

    def _install(self, name: str, linear: nn.Module, rotation: online.InputRotation) -> None:
        online.install(linear, rotation)
        for suffix, tensor in rotation.tensors().items():
            self.context.recorder.debug("rotation_matrices", f"{name}.{suffix}", tensor)
        export.record_online(self.context.state, name, rotation.tensors(), self.settings.max_tp_size)
