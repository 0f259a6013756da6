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
from modelslim_core.runtime.unit import Unit, UnitInput

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


class _UnitReached(Exception):
    """Stops a forward once a unit's inputs are recorded."""


def same_inputs(a: Any, b: Any, path: str = "") -> str | None:
    """Where two nested unit inputs differ (None: they agree); tensors compared numerically."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return path or "a tensor argument"
        if a.shape != b.shape or not torch.allclose(a.float(), b.float(), rtol=1e-3, atol=1e-4):
            return path or "a tensor argument"
        return None
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        if len(a) != len(b):
            return path or "the positional arguments"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := same_inputs(x, y, f"{path}[{i}]"))), None)
    if isinstance(a, dict) and isinstance(b, dict):
        for key in set(a) | set(b):
            difference = same_inputs(a.get(key), b.get(key), key)
            if difference:
                return difference
        return None
    return None if (a is None) == (b is None) else (path or "an argument")


def model_class_for(config: Any, trust_remote_code: bool = False) -> Any:
    """The class to instantiate: the config's own architecture, else causal LM for decoders, else the base model.

    A model that ships its own code (`auto_map`) and is trusted goes through the auto classes, which load it.
    """
    import transformers
    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    auto_map = getattr(config, "auto_map", None) or {}
    if trust_remote_code and auto_map:
        return AutoModelForCausalLM if "AutoModelForCausalLM" in auto_map else AutoModel
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
        return model_class_for(self._config(), self.trust_remote_code)

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

    @torch.no_grad()
    def capture_unit_inputs(self, model: nn.Module, samples: list[Any]) -> list[UnitInput]:
        """The base capture, plus a check that this architecture's blocks can be chained unit by unit.

        Runners feed a unit only what the previous one returned (hidden states) plus the first unit's
        keyword arguments. Architectures whose blocks hand each other more (T5's `position_bias`) would be
        calibrated on wrong inputs, silently; so the second unit's real inputs for the first sample are
        compared with the chained ones, and a mismatch is an error. (Needs the weights in memory: skipped
        on a layer-wise skeleton.)
        """
        captured = super().capture_unit_inputs(model, samples)
        units = self.units(model)
        if len(units) > 1 and samples and not any(p.is_meta for p in units[0].module.parameters()):
            self._check_chaining(model, units, samples[0], captured[0])
        return captured

    def _check_chaining(self, model: nn.Module, units: list[Unit], sample: Any, first: UnitInput) -> None:
        real: list[UnitInput] = []

        def hook(_module: nn.Module, args: tuple, kwargs: dict) -> None:
            real.append(UnitInput(args=args, kwargs=kwargs))
            raise _UnitReached

        handle = units[1].module.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            self.forward_sample(model, sample, next(model.parameters()).device)
        except _UnitReached:
            pass
        finally:
            handle.remove()
        if not real:
            return
        chained = self.next_unit_input(units[0].module(*first.args, **first.kwargs), first)
        difference = same_inputs((chained.args, chained.kwargs), (real[0].args, real[0].kwargs))
        if difference:
            raise ModelError(
                f"the blocks of {type(model).__name__} ({units[0].name}, {units[1].name}, ...) pass each other more than "
                f"their hidden states ({difference!r} differs when the second block is fed the first one's output), "
                "so the default adapter cannot calibrate them one by one without computing wrong activations.",
                "this architecture needs its own model adapter (see README.md 'Plugins'), or use a data-free "
                "practice (dynamic activations), which runs no calibration forward.",
            )

    def forward_sample(self, model: nn.Module, sample: Any, device: torch.device) -> Any:
        """Like the base, but only passes `use_cache=False` to models whose forward accepts it."""
        inputs = {k: v.to(device) for k, v in sample.items()}
        parameters = inspect.signature(model.forward).parameters
        if "use_cache" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            inputs["use_cache"] = False
        accepted = {k: v for k, v in inputs.items() if k in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())}
        return model(**accepted)
