"""The adapter for any model type no family claims: finds the repeated blocks of an unknown architecture.

Families name their units (decoder layers); an architecture we have never seen does not. What every
transformers model has, decoder or encoder, is a stack of identical blocks held in one `nn.ModuleList`
(`model.layers`, `encoder.layer`, `transformer.h`, `encoder.block` ...). The default adapter takes the
largest such list (most parameters; ties: the first in module order) as its units and logs which one
it chose, so an unfamiliar checkpoint still quantizes with the default practices. The model is loaded with
the class its config names (`architectures[0]`, so the saved names equal the checkpoint's), falling back
to the causal-LM auto class for decoder configs and the base auto model otherwise (encoders). Fused MoE
experts are split per expert as in the MoE families.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from torch import nn

from modelslim_core.errors import ModelError
from modelslim_core.models.base import ModelAdapter
from modelslim_core.models.moe import MoEAdapterMixin
from modelslim_core.runtime.unit import Unit

logger = logging.getLogger(__name__)


def block_stacks(model: nn.Module) -> list[tuple[str, nn.ModuleList]]:
    """Every ModuleList whose children are all of one class (candidate unit stacks), outermost first."""
    stacks = []
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(child) for child in module}) == 1:
            if any(isinstance(child, (nn.Linear, nn.ModuleList)) for child in module):
                continue  # a list of bare linears (heads, projections) is not a stack of blocks
            if sum(1 for _ in module[0].modules()) < 2:
                continue
            stacks.append((name, module))
    return stacks


def _parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def largest_block_stack(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    stacks = block_stacks(model)
    if not stacks:
        return None
    return max(stacks, key=lambda item: (_parameter_count(item[1]), -stacks.index(item)))


def model_class_for(config: Any) -> Any:
    """The class to instantiate: the config's own architecture, else causal LM for decoders, else the base model."""
    import transformers
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    for architecture in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, architecture, None)
        if cls is not None and hasattr(cls, "from_pretrained"):
            return cls
    if config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not getattr(config, "is_encoder_decoder", False):
        return AutoModelForCausalLM
    return AutoModel


class DefaultAdapter(MoEAdapterMixin, ModelAdapter):
    family = "default"

    def _config(self) -> Any:
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.model_path, local_files_only=True, trust_remote_code=self.trust_remote_code)
        except Exception as exc:
            raise ModelError(f"cannot read the model config in {str(self.model_path)!r}: {exc}",
                             "check config.json, or pass --trust_remote_code true for a model that ships its own code.") from None

    def model_class(self) -> Any:
        return model_class_for(self._config())

    def units(self, model: nn.Module) -> list[Unit]:
        found = largest_block_stack(model)
        if found is None:
            raise ModelError(
                f"found no stack of repeated blocks (a ModuleList of identical layers) in {type(model).__name__} "
                f"(model_type {self.model_type!r}).",
                "this architecture needs its own model adapter; see README.md 'Plugins'.",
            )
        name, stack = found
        if not getattr(self, "_logged_units", False):
            logger.info("Default adapter: the units are the %d %s blocks of %s (the largest stack of identical blocks).",
                        len(stack), type(stack[0]).__name__, name or type(model).__name__)
            self._logged_units = True
        return [Unit(name=f"{name}.{i}" if name else str(i), module=block, index=i) for i, block in enumerate(stack)]

    def forward_sample(self, model: nn.Module, sample: Any, device: torch.device) -> Any:
        """Like the base, but only passes `use_cache=False` to models whose forward accepts it."""
        inputs = {k: v.to(device) for k, v in sample.items()}
        parameters = inspect.signature(model.forward).parameters
        if "use_cache" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            inputs["use_cache"] = False
        accepted = {k: v for k, v in inputs.items() if k in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())}
        return model(**accepted)
