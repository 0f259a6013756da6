"""Where a runner keeps the model's units and the calibration activations.

The unit pipeline is the same for every runner; only placement differs. Model-wise loads the whole model
onto the device. Layer-wise builds a weightless skeleton, reads each unit's weights from the source
checkpoint when the unit is processed, moves it to the device, and drops it once the savers have written
it; the modules before the first unit are loaded only while the calibration inputs are captured.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from modelslim_core.models.base import ModelAdapter
from modelslim_core.models.weights import LazyWeights, SourceWeights, tied_aliases
from modelslim_core.quant.quantized_linear import release_float_copies
from modelslim_core.runtime.context import RunContext
from modelslim_core.runtime.unit import Unit
from modelslim_runners.memory import return_freed_host_memory
from modelslim_runners.pieces import piece_parameter_names, release_piece

logger = logging.getLogger(__name__)


def map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """Apply `fn` to every tensor inside nested tuples/lists/dicts; other values are kept as they are."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple):
        return tuple(map_tensors(v, fn) for v in value)
    if isinstance(value, list):
        return [map_tensors(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: map_tensors(v, fn) for k, v in value.items()}
    return value


def move(value: Any, device: torch.device) -> Any:
    """Move every tensor inside nested tuples/lists/dicts to `device`."""
    return map_tensors(value, lambda tensor: tensor.to(device))


def outside_units(model: nn.Module, units: list[Unit], skip_modules: set[str]) -> list[str]:
    """Parameter names that belong to no unit (and to none of `skip_modules`)."""
    prefixes = tuple(u.name + "." for u in units) + tuple(m + "." for m in skip_modules)
    return [n for n, _ in model.named_parameters(remove_duplicate=False) if not n.startswith(prefixes)]


class Placement:
    """Model-wise placement: everything on the compute device."""

    def __init__(self, context: RunContext):
        self.context = context
        self.device = context.device.torch_device

    @property
    def activation_device(self) -> torch.device:
        return self.device

    def load(self, adapter: ModelAdapter) -> nn.Module:
        return adapter.load_model(self.context.compute_dtype).to(self.device)

    def prepare_prefix(self, model: nn.Module, units: list[Unit]) -> None:
        """Before the calibration inputs of the first unit are captured."""

    def finish_prefix(self, model: nn.Module, units: list[Unit]) -> None:
        """After the capture."""

    @property
    def loads_pieces(self) -> bool:
        """Whether `enter`/`leave` can take a piece of a unit (only lazy layer-wise placement gains from it)."""
        return False

    def enter(self, unit: Unit) -> None:
        """Before a unit is processed."""

    def leave(self, unit: Unit) -> None:
        """After a unit is processed and saved: its quantized layers drop the float weights their forward kept
        (rebuilt if the model runs again), so the whole model never holds float copies next to its codes."""
        release_float_copies(unit.module)


class LayerWisePlacement(Placement):
    """Weightless skeleton on the host; one materialised unit on the device at a time."""

    def __init__(self, context: RunContext):
        super().__init__(context)
        self.lazy: LazyWeights | None = None
        self._prefix_params: list[str] = []

    @property
    def activation_device(self) -> torch.device:
        return torch.device("cpu")

    def load(self, adapter: ModelAdapter) -> nn.Module:
        dtype = self.context.compute_dtype
        source = SourceWeights(adapter.model_path)
        if source.available:
            model = adapter.build_skeleton(dtype)
            lazy = LazyWeights(source, tied_aliases(model), dtype, getattr(adapter, "saved_tensor_name", None))
            missing = lazy.missing([n for n, _ in model.named_parameters(remove_duplicate=False)])
            if not missing:
                self.lazy = lazy
                self.context.weights = lazy
                return model
            logger.warning("Checkpoint keys differ from the module names (e.g. %s): loading the whole model instead "
                           "of layer by layer.", missing[0])
        else:
            logger.warning("No safetensors weights to read layer by layer: loading the whole model on the host.")
        return adapter.load_model(dtype)

    def _prefix_names(self, model: nn.Module, units: list[Unit]) -> list[str]:
        return outside_units(model, units, self.context.adapter.output_module_names(model))

    def prepare_prefix(self, model: nn.Module, units: list[Unit]) -> None:
        if self.lazy is not None:  # only what is still on meta: a processor may hold rotated prefix weights
            self._prefix_params = [n for n in self._prefix_names(model, units) if model.get_parameter(n).is_meta]
            self.lazy.materialize(model, names=self._prefix_params)

    def finish_prefix(self, model: nn.Module, units: list[Unit]) -> None:
        if self.lazy is not None:
            self.lazy.release(model, self._prefix_params)

    @property
    def loads_pieces(self) -> bool:
        """Whether units can be loaded piece by piece (the skeleton is lazy: weights come from the checkpoint)."""
        return self.lazy is not None

    @property
    def storage_dtype(self) -> torch.dtype:
        """The dtype pieces are held in: the checkpoint's own (processors compute in float32 per linear)."""
        return self.context.adapter.source_dtype or self.context.compute_dtype

    def enter(self, unit: Unit, dtype: torch.dtype | None = None) -> None:
        """Materialise the unit, or only the piece of it (in `dtype`, default: the checkpoint's own)."""
        if not unit.whole:
            self.lazy.materialize(unit.module, unit.name, names=piece_parameter_names(unit),
                                  dtype=dtype or self.storage_dtype, device=self.device)
            return
        if self.lazy is not None:
            self.lazy.materialize(unit.module, unit.name)
        unit.module.to(self.device)

    def leave(self, unit: Unit) -> None:
        if unit.whole:
            unit.module.to("meta")
        else:
            release_piece(unit)
        return_freed_host_memory()
