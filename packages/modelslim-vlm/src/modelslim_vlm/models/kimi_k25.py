"""Kimi-K2.5 / K2.6 (`kimi_k25`): a MoonViT vision tower, a patch-merger projector and Kimi-K2's DeepSeek-V3
language model (MLA attention, a dense first layer, 384 routed experts with a float router).

Units: the vision tower and the projector (`mm_projector`: a layer norm and two linears) are each one unit,
processed whole and kept float; then the language model's decoder layers. The projector's last linear writes
image features into the residual stream (`stream_writers`).

Checkpoint names. The release keeps the original layout, which transformers renames on load:
`language_model.model.layers.*` / `language_model.lm_head` for the language model, `vision_tower.encoder.blocks.N`
with `norm0`/`norm1`, `mlp.fc0`/`mlp.fc1`, `wo` and one fused `wqkv` per attention, and `mm_projector.proj.0/2`.
transformers' own inverse cannot be used: it renames every `layers` back to `blocks`, the language model's too.
So the names are mapped here, and the tower's query/key/value projections are written back fused into `wqkv`,
with the query and key rows returned to the release's interleaved rotary order (the inverse of the permutation
transformers applies when it splits them). Those three projections are never quantized (they are one tensor in
the release). A release ships no MTP layer for this family.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from modelslim_core.models.fused_tensors import FusedPart
from modelslim_core.models.moe import MoEAdapterMixin
from modelslim_vlm.models.base import VlmAdapter

#: (module path pattern, release name), first match wins; applied to tensor and module names alike.
RELEASE_NAMES = (
    (re.compile(r"^model\.language_model(?=\.|$)"), "language_model.model"),
    (re.compile(r"^lm_head(?=\.|$)"), "language_model.lm_head"),
    (re.compile(r"^model\.vision_tower\.patch_embed\.pos_emb\.position_embeddings$"),
     "vision_tower.patch_embed.pos_emb.weight"),
    (re.compile(r"^model\.vision_tower\.layers\.(\d+)\.norm1(?=\.|$)"), r"vision_tower.encoder.blocks.\1.norm0"),
    (re.compile(r"^model\.vision_tower\.layers\.(\d+)\.norm2(?=\.|$)"), r"vision_tower.encoder.blocks.\1.norm1"),
    (re.compile(r"^model\.vision_tower\.layers\.(\d+)\.mlp\.fc1(?=\.|$)"), r"vision_tower.encoder.blocks.\1.mlp.fc0"),
    (re.compile(r"^model\.vision_tower\.layers\.(\d+)\.mlp\.fc2(?=\.|$)"), r"vision_tower.encoder.blocks.\1.mlp.fc1"),
    (re.compile(r"^model\.vision_tower\.layers\.(\d+)\.attn\.proj(?=\.|$)"), r"vision_tower.encoder.blocks.\1.wo"),
    (re.compile(r"^model\.vision_tower\.layers\.(\d+)(?=\.|$)"), r"vision_tower.encoder.blocks.\1"),
    (re.compile(r"^model\.vision_tower(?=\.|$)"), "vision_tower.encoder"),
    (re.compile(r"^model\.mm_projector\.in_proj(?=\.|$)"), "mm_projector.proj.0"),
    (re.compile(r"^model\.mm_projector\.out_proj(?=\.|$)"), "mm_projector.proj.2"),
    (re.compile(r"^model\.mm_projector(?=\.|$)"), "mm_projector"),
)
#: A tower attention's split projections: layer, projection, tensor leaf.
TOWER_QKV = re.compile(r"^model\.vision_tower\.layers\.(\d+)\.attn\.([qkv])_proj\.(weight|bias)$")
SLOTS = {"q": 0, "k": 1, "v": 2}


def interleave_rotary_rows(tensor: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of each head from transformers' split-halves rotary order back to the release's interleaved pairs
    (the inverse of the permutation transformers applies to the release's query and key rows on load)."""
    rows = tensor.shape[0]
    half = rows // heads // 2
    rest = tensor.shape[1:]
    return tensor.reshape(heads, 2, half, *rest).transpose(1, 2).reshape(rows, *rest)


def rotary_qkv_fuser(heads: int):
    """Fuses [q, k, v] parts into one release tensor, with q's and k's rows back in interleaved rotary order."""

    def fuse(parts: list[torch.Tensor]) -> torch.Tensor:
        query, key, value = parts
        return torch.cat([interleave_rotary_rows(query, heads), interleave_rotary_rows(key, heads), value])

    return fuse


class KimiK25Adapter(MoEAdapterMixin, VlmAdapter):
    family = "kimi_k25"
    model_types = ("Kimi-K2.5", "Kimi-K2.6")
    model_type_prefixes = ("Kimi-K2.5", "Kimi-K2.6")
    hf_model_types = ("kimi_k25",)
    model_class_name = "Kimi_K25ForConditionalGeneration"
    tower_paths = ("model.vision_tower", "model.mm_projector")
    stream_writers = ("model.mm_projector.out_proj",)
    #: The tower's q/k/v are one `wqkv` tensor in the release (written float, fused); relative to the tower unit.
    float_linears = ("layers.*.attn.q_proj", "layers.*.attn.k_proj", "layers.*.attn.v_proj")
    modalities = ("image",)

    def saved_tensor_name(self, name: str) -> str:
        for pattern, release in RELEASE_NAMES:
            renamed, count = pattern.subn(release, name, count=1)
            if count:
                return renamed
        return name

    def fused_checkpoint_part(self, name: str) -> FusedPart | None:
        """The tower's q/k/v projections are parts of the release's `vision_tower.encoder.blocks.N.wqkv`."""
        match = TOWER_QKV.match(name)
        if match is None:
            return None
        layer, projection, leaf = match.groups()
        heads = int(self._vision_config().get("num_attention_heads", 16))
        return FusedPart(f"vision_tower.encoder.blocks.{layer}.wqkv.{leaf}", SLOTS[projection], 3,
                         rotary_qkv_fuser(heads))

    def _vision_config(self) -> dict[str, Any]:
        return self.config_json.get("vision_config") or {}
