"""What a kernel declares (the tensors it needs) and builds (a module computing from them)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

from modelslim_core.errors import CheckpointError


@dataclass(frozen=True)
class TensorSpec:
    """Allowed dtypes and exact shape of one saved tensor (or one of a few alternative shapes)."""

    dtypes: tuple[torch.dtype, ...]
    shape: tuple[int, ...]
    alternatives: tuple[tuple[int, ...], ...] = ()

    def allows(self, shape: tuple[int, ...]) -> bool:
        return shape == self.shape or shape in self.alternatives

    def describe(self) -> str:
        names = "|".join(str(d).removeprefix("torch.") for d in self.dtypes)
        shapes = " or ".join(str(list(s)) for s in (self.shape, *self.alternatives))
        return f"{names} {shapes}"


@dataclass(frozen=True)
class LinearShape:
    """The float architecture's view of one linear, plus model-level facts the format depends on.

    `name` is the linear's full module name (W4A8_DYNAMIC's scale_bias layout depends on its role) and
    `group_size` the checkpoint's global group size (per-group scales are `[out, in/group_size]`).
    """

    out_features: int
    in_features: int
    has_bias: bool
    source_dtype: torch.dtype | None
    name: str = ""
    group_size: int = 0
    #: The dtype the checkpoint says it was written to be served in (description metadata.serving_dtype);
    #: it, not the source dtype, decides the deq_scale layout when present.
    serving_dtype: torch.dtype | None = None

    @property
    def deq_scale_dtype(self) -> torch.dtype:
        """fp32 deq_scale for bf16 serving, else int64 holding the fp32 bit pattern."""
        return torch.float32 if (self.serving_dtype or self.source_dtype) == torch.bfloat16 else torch.int64


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


def int_weight_specs(shape: LinearShape) -> dict[str, TensorSpec]:
    """int8 codes plus float32 scale and offset, per output channel `[out, 1]` or, when the checkpoint has a
    group size that divides the input dim, per group `[out, in/group_size]`."""
    column = (shape.out_features, 1)
    groups = shape.in_features // shape.group_size if shape.group_size and shape.in_features % shape.group_size == 0 else 1
    alternatives = ((shape.out_features, groups),) if groups > 1 else ()
    return {
        "weight": TensorSpec((torch.int8,), (shape.out_features, shape.in_features)),
        "weight_scale": TensorSpec((torch.float32,), column, alternatives),
        "weight_offset": TensorSpec((torch.float32,), column, alternatives),
    }


def check_same_shape(tensors: dict[str, torch.Tensor], first: str, second: str, linear: str) -> None:
    """Two tensors of one linear that must agree in shape (e.g. weight_scale and weight_offset)."""
    if tensors[first].shape != tensors[second].shape:
        raise CheckpointError(
            f"{linear}.{first} is {list(tensors[first].shape)} but {linear}.{second} is {list(tensors[second].shape)}.",
            "they must have the same shape; the checkpoint is corrupted, re-run the quantization.",
        )
