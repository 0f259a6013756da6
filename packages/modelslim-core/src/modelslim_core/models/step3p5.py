"""Step-3.5-Flash (config.json model_type `step3p5`): a MoE decoder with sliding-window and full attention layers,
a per-head output gate (`self_attn.g_proj`, one sigmoid gate per head), q/k norms, a router with a routing bias,
a shared expert, and 3 MTP layers after the last decoder layer (`model.layers.<num_hidden_layers + i>`, copied
to the output float, models/mtp.py).

transformers 5.23 ships this model's configuration (`Step3p7TextConfig`, registered as `step3p5`) and its decoder
stack (inside Step-3.7's vision-language model), but no causal-LM class for the text-only release. The release
ships its own modeling code (config.json `auto_map`), which is what loads it: the adapter requires that code and
--trust_remote_code, and says so before anything is loaded instead of failing in transformers' auto classes.
Units are the decoder layers of whatever that code builds; fused experts are split per expert (models/moe.py).
Kept float whatever a practice includes: the router and the per-head output gate (one output per head decides
how much of the head reaches o_proj, like a shared-expert gate).
"""

from __future__ import annotations

from pathlib import Path

from modelslim_core.errors import ModelError
from modelslim_core.models.base import ModelAdapter
from modelslim_core.models.moe import MoEAdapterMixin
from modelslim_core.models.mtp import MtpLayersMixin

AUTO_CLASS = "AutoModelForCausalLM"


class Step3p5Adapter(MtpLayersMixin, MoEAdapterMixin, ModelAdapter):
    family = "step3p5"
    model_types = ("Step-3.5-Flash",)
    model_type_prefixes = ("Step-3.5", "Step3.5")
    hf_model_types = ("step3p5",)
    float_linears = ("mlp.gate", "moe.gate", "self_attn.g_proj")

    def __init__(self, model_type: str, model_path: Path, trust_remote_code: bool = False):
        super().__init__(model_type, model_path, trust_remote_code)
        self.check_modeling_code()

    def check_modeling_code(self) -> None:
        """ModelError unless the model directory ships a causal-LM class and the user trusts it."""
        auto_map = self.config_json.get("auto_map") or {}
        where = f"{self.model_type!r} (config.json model_type 'step3p5' in {str(self.model_path)!r})"
        if AUTO_CLASS not in auto_map:
            raise ModelError(
                f"{where} cannot be loaded: transformers has this model's configuration and decoder stack but no "
                f"causal-LM class for it, and the model directory ships no modeling code of its own (config.json has "
                f"no auto_map.{AUTO_CLASS}).",
                "use the release's own directory as --model_path: its config.json (with auto_map) and its "
                "modeling_step3p5.py / configuration files, then pass --trust_remote_code true.",
            )
        if not self.trust_remote_code:
            raise ModelError(
                f"{where} is loaded by the modeling code it ships ({auto_map[AUTO_CLASS]}), which runs only when "
                "trusted: transformers has no causal-LM class for this model.",
                "read the model directory's modeling files, then rerun with --trust_remote_code true.",
            )
