"""One quantization of an input that several linears read: q/k/v share the attention's input, gate/up the MLP's.

The runtime quantizes each linear's input on entry (per token for the dynamic kernels, with the input scale for
static W8A8). Sibling linears are called one after the other on the very same tensor object, so the codes the
first one computed are the codes the next ones would compute: `reuse` keeps the last result per thread and
hands it back while the input is the same object, unmodified (its version counter unchanged: in-place writes
through any view bump it), under the same quantization key (bits, or input scale and offset). Anything else
recomputes, so the result is bitwise what the unshared computation gives. Only the last input is kept alive
(one activation and its codes), and the codes are shared read-only: callers must not write into them."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any

import torch


class _Last(threading.local):
    source: torch.Tensor | None = None
    version: int = -1
    key: Hashable = None
    result: Any = None


_LAST = _Last()


def reuse(x: torch.Tensor, key: Hashable, compute: Callable[[torch.Tensor], Any]) -> Any:
    """compute(x), or the result of the previous call when it had this very tensor, unchanged, and this key."""
    if x.is_inference():  # inference tensors carry no version counter: in-place writes would go unnoticed
        return compute(x)
    last = _LAST
    if last.source is x and last.version == x._version and last.key == key:
        return last.result
    result = compute(x)
    last.source, last.version, last.key, last.result = x, x._version, key, result
    return result


def forget() -> None:
    """Drop the kept input and result (frees them; the next call recomputes)."""
    _LAST.source, _LAST.version, _LAST.key, _LAST.result = None, -1, None, None
