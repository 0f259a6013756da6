"""MiniMax-M2 family (M2, M2.1, M2.5, M2.7): GQA attention with q/k norms over the whole projection, and a
sparse MoE of 256 experts per layer with a sigmoid router and a routing bias; no shared expert, no MTP.

The release names the MoE block `block_sparse_moe` and each expert's linears `w1` (gate), `w3` (up) and
`w2` (down); transformers calls them `mlp` and fuses the experts, we split them per expert (`gate_proj` ...).
Saved names are the release's (transformers' load-time renames inverted, models/checkpoint_names.py), which is
what vLLM-Ascend's MiniMax-M2 loader reads.
The router (`block_sparse_moe.gate`, a bare weight) and its `e_score_correction_bias` are not linears and stay
float; the practices also keep `lm_head` float. The release ships FP8 128x128 blocks, read as float
(io/source_dequant.py).
"""

from __future__ import annotations

from modelslim_core.models.base import ModelAdapter
from modelslim_core.models.moe import MoEAdapterMixin


class MiniMaxM2Adapter(MoEAdapterMixin, ModelAdapter):
    family = "minimax_m2"
    model_types = ("MiniMax-M2", "MiniMax-M2.1", "MiniMax-M2.5", "MiniMax-M2.7")
    model_type_prefixes = ("MiniMax-M2",)
    hf_model_types = ("minimax_m2",)
