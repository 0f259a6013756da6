"""Recording a module's calls: the "args" capture mode.

A forward pre-hook sees every call's positional and keyword arguments exactly as the pipeline passed them;
each is copied to the CPU at once, so recording a long generation never holds device memory and later
in-place updates of the pipeline's tensors cannot alter what was recorded.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch
from torch import nn

from modelslim_core.runtime.unit import UnitInput
from modelslim_runners.placement import map_tensors


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True)


class CallRecorder:
    """While active (a context manager), appends each call of `module` to `records` as a CPU UnitInput."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.records: list[UnitInput] = []
        self._handle: Any = None

    def _record(self, _module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.records.append(UnitInput(args=map_tensors(args, _cpu_copy), kwargs=map_tensors(kwargs, _cpu_copy)))

    def __enter__(self) -> CallRecorder:
        self._handle = self.module.register_forward_pre_hook(self._record, with_kwargs=True)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._handle.remove()
