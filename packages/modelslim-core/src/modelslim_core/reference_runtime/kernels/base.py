"""What a kernel declares (the tensors it needs) and builds (a module computing from them)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class TensorSpec:
    """Allowed dtypes and exact shape of one saved tensor."""

    dtypes: tuple[torch.dtype, ...]
    shape: tuple[int, ...]

    def describe(self) -> str:
        names = "|".join(str(d).removeprefix("torch.") for d in self.dtypes)
        return f"{names} {list(self.shape)}"


@dataclass(frozen=True)
class LinearShape:
    """The float architecture's view of one linear, plus model-level facts the format depends on."""

    out_features: int
    in_features: int
    has_bias: bool
    source_dtype: torch.dtype | None


class LinearKernel(ABC):
    tag: str

    @abstractmethod
    def expected(self, shape: LinearShape) -> dict[str, TensorSpec]:
        """suffix -> spec of every tensor this kernel reads (and nothing else may be saved for the linear)."""

    @abstractmethod
    def build(self, tensors: dict[str, torch.Tensor], shape: LinearShape) -> nn.Module:
        """A module that computes the linear from the saved tensors."""


def float_bias_spec(shape: LinearShape) -> dict[str, TensorSpec]:
    """The optional float bias of weight-quantized linears, saved in the model's dtype."""
    if not shape.has_bias:
        return {}
    return {"bias": TensorSpec((shape.source_dtype or torch.float32,), (shape.out_features,))}


def per_channel_weight_specs(shape: LinearShape) -> dict[str, TensorSpec]:
    """int8 codes plus per-output-channel float32 scale and offset."""
    column = (shape.out_features, 1)
    return {
        "weight": TensorSpec((torch.int8,), (shape.out_features, shape.in_features)),
        "weight_scale": TensorSpec((torch.float32,), column),
        "weight_offset": TensorSpec((torch.float32,), column),
    }
