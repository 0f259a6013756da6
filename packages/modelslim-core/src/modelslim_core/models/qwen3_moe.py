"""Qwen3-MoE models (Qwen3-30B-A3B, Qwen3-235B-A22B, Qwen3-Coder-480B-A35B and their 2507 updates).

Every decoder layer is a unit: GQA attention with q/k norms, then a sparse MoE block whose router
(`mlp.gate`, a plain weight, never a linear site) picks `num_experts_per_tok` of `num_experts` experts.
The fused experts are split into per-expert linears by `MoEAdapterMixin` (models/moe.py).
"""

from modelslim_core.models.base import ModelAdapter
from modelslim_core.models.moe import MoEAdapterMixin


class Qwen3MoeAdapter(MoEAdapterMixin, ModelAdapter):
    family = "qwen3_moe"
    model_types = (
        "Qwen3-30B",
        "Qwen3-30B-A3B",
        "Qwen3-30B-A3B-Instruct-2507",
        "Qwen3-30B-A3B-Thinking-2507",
        "Qwen3-235B",
        "Qwen3-235B-A22B",
        "Qwen3-235B-A22B-Instruct-2507",
        "Qwen3-235B-A22B-Thinking-2507",
        "Qwen3-Coder-30B-A3B-Instruct",
        "Qwen3-Coder-480B-A35B",
        "Qwen3-Coder-480B-A35B-Instruct",
    )
    model_type_prefixes = ("Qwen3-",)
    hf_model_types = ("qwen3_moe",)
