"""Step-3.7-Flash (config.json model_type `step3p7`): a ViT vision tower with two stride-2 convolution
downsamplers, a one-linear projector, and Step-3.5's language model (sliding-window and full attention layers, q/k
norms, a per-head output gate `self_attn.g_proj`, dense first layers then MoE layers with a routing bias, a
shared expert and clamped-SwiGLU routed experts), with MTP layers after the last decoder layer.

Units: the vision tower and the projector are each one unit, processed whole and kept float by the practice (the
projector writes image features into the residual stream: `stream_writers`); then the language model's decoder
layers. Kept float whatever a practice includes: the router and the per-head output gate (as for Step-3.5), and
the tower's query/key/value projections (one tensor in the release).

Checkpoint names. The release keeps its own layout, which transformers renames on load (its conversion mapping
for `step3p7`, and for the tower the one for `step3p5_vision`); the names are those rules inverted
(models/checkpoint_names.py): `model.layers.*` for the language model, `vision_model.transformer.resblocks.N.*`
for the tower, `vit_large_projector` for the projector. Two kinds of tensors ship fused and are written back
fused (models/fused_tensors.py):
- each tower attention's `attn.in_proj_weight` / `in_proj_bias` (query, key, value concatenated, the query and
  key rows in the release's interleaved rotary order, which transformers permutes on load);
- each MoE layer's routed experts, stacked over experts: `moe.gate_proj.weight` / `moe.up_proj.weight`
  `[E, I, H]` and `moe.down_proj.weight` `[E, H, I]`. They are therefore written float: vLLM-Ascend 0.23 has no
  expert layout for `step3p7` either, so a config quantizing them is refused when it is loaded.
The MTP layers (`model.layers.<num_hidden_layers + i>.*`) are copied to the output float (models/mtp.py).
"""

from __future__ import annotations

import functools
import re
from typing import Any

import torch

from modelslim_core.models.checkpoint_names import CheckpointNames
from modelslim_core.models.fused_tensors import FusedPart
from modelslim_core.models.moe import MoEAdapterMixin
from modelslim_core.models.mtp import MtpLayersMixin
from modelslim_vlm.models.base import VlmAdapter
from modelslim_vlm.models.kimi_k25 import SLOTS, rotary_qkv_fuser

TOWER = "model.vision_model"
#: The tower's name in the release, and the model_type of transformers' conversion rules for it.
RELEASE_TOWER, TOWER_RULES = "vision_model", "step3p5_vision"
#: A tower attention's split projections: layer, projection, tensor leaf.
TOWER_QKV = re.compile(rf"^{re.escape(TOWER)}\.layers\.(\d+)\.self_attn\.([qkv])_proj\.(weight|bias)$")
#: A routed expert's projection after the per-expert split (models/moe.py): layer, expert, projection.
EXPERT = re.compile(r"^model\.language_model\.layers\.(\d+)\.mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


class Step3p7Adapter(MtpLayersMixin, MoEAdapterMixin, VlmAdapter):
    family = "step3p7"
    model_types = ("Step-3.7-Flash", "Step-3.7")
    model_type_prefixes = ("Step-3.7", "Step3.7")
    hf_model_types = ("step3p7",)
    model_class_name = "Step3p7ForConditionalGeneration"
    tower_paths = (TOWER, "model.multi_modal_projector")
    stream_writers = ("model.multi_modal_projector",)
    #: The router and the per-head output gate (decoder units); the tower's q/k/v (relative to the tower unit).
    float_linears = ("mlp.gate", "self_attn.g_proj", "layers.*.self_attn.q_proj", "layers.*.self_attn.k_proj",
                     "layers.*.self_attn.v_proj")
    modalities = ("image",)

    @functools.cached_property
    def _tower_names(self) -> CheckpointNames:
        return CheckpointNames.for_config({"model_type": TOWER_RULES})

    def saved_tensor_name(self, name: str) -> str:
        if name == TOWER or name.startswith(TOWER + "."):
            inner = self._tower_names.tensor_name(name[len(TOWER) + 1:]) if name != TOWER else ""
            return f"{RELEASE_TOWER}.{inner}" if inner else RELEASE_TOWER
        return self.checkpoint_names.tensor_name(name)

    def fused_checkpoint_part(self, name: str) -> FusedPart | None:
        """The tower's q/k/v are parts of `attn.in_proj_*`; a layer's routed experts are parts of `moe.*_proj`."""
        match = TOWER_QKV.match(name)
        if match is not None:
            layer, projection, leaf = match.groups()
            heads = int(self._sub_config("vision_config").get("num_attention_heads", 16))
            target = f"{RELEASE_TOWER}.transformer.resblocks.{layer}.attn.in_proj_{leaf}"
            return FusedPart(target, SLOTS[projection], 3, rotary_qkv_fuser(heads))
        match = EXPERT.match(name)
        if match is not None:
            layer, expert, projection = match.groups()
            return FusedPart(f"model.layers.{layer}.moe.{projection}.weight", int(expert), self._num_experts(),
                             torch.stack)
        return None

    def release_fused_linears(self) -> list[str]:
        """Each MoE layer's routed-expert projections: stacked over experts in the release."""
        text = self._sub_config("text_config")
        kinds = text.get("mlp_layer_types") or ["sparse"] * int(text.get("num_hidden_layers", 0))
        return [f"model.language_model.layers.{layer}.mlp.experts.0.{projection}"
                for layer, kind in enumerate(kinds) if kind == "sparse"
                for projection in ("gate_proj", "up_proj", "down_proj")]

    def _num_experts(self) -> int:
        text = self._sub_config("text_config")
        return int(text.get("num_local_experts") or text.get("n_routed_experts"))

    def _sub_config(self, key: str) -> dict[str, Any]:
        return self.config_json.get(key) or {}
