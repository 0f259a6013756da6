"""`--device` strings: parsing, availability, and the default choice.

Grammar: `cpu`, `cuda`, `npu`, optionally followed by `:` and comma-separated indices (`npu:0,1,2,3`,
`cuda:1`, `cpu:0,1`). Several indices mean data-parallel layer-wise quantization. Without `--device`, an
NPU is used when torch_npu and a device are present, else CUDA when present, else the CPU.
torch_npu is imported only when an NPU is asked for or torch_npu is installed (never by `import torch`
itself in the CLI), and a torch_npu that cannot load breaks only runs that asked for an NPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys

import torch

from modelslim_core.devices_env import BACKEND_AUTOLOAD_ENV
from modelslim_core.errors import DeviceError, UsageError
from modelslim_core.runtime.context import DeviceSpec

logger = logging.getLogger(__name__)

DEVICE_TYPES = ("cpu", "cuda", "npu")
_EXAMPLES = "examples: cpu, cuda, cuda:0, npu:0,1,2,3, cpu:0,1"


def parse_device(text: str) -> DeviceSpec:
    """Parse a device string; malformed strings are usage errors."""
    stripped = text.strip()
    if not stripped:
        raise UsageError("--device is empty.", _EXAMPLES)
    kind, sep, rest = stripped.partition(":")
    kind = kind.strip().lower()
    if kind not in DEVICE_TYPES:
        raise UsageError(f"--device {text!r}: unknown device type {kind!r}; valid types: {', '.join(DEVICE_TYPES)}.", _EXAMPLES)
    if not sep or not rest.strip():
        return DeviceSpec(kind, None)
    pieces = [piece.strip() for piece in rest.split(",") if piece.strip()]
    if not pieces or not all(piece.isdigit() for piece in pieces):
        raise UsageError(f"--device {text!r}: device indices must be non-negative integers separated by commas.", _EXAMPLES)
    indices = tuple(int(piece) for piece in pieces)
    if len(set(indices)) != len(indices):
        raise UsageError(f"--device {text!r}: a device index is repeated.", "list each device once.")
    return DeviceSpec(kind, indices)


def load_npu_backend(requested: bool) -> bool:
    """Import torch_npu if installed; False when it is absent (or broken and no NPU was asked for).

    A torch_npu that cannot load (no CANN driver, wrong version) is an error naming the cause only when the
    user asked for an NPU; while merely probing for a default device it is a warning and the NPU is skipped."""
    if importlib.util.find_spec("torch_npu") is None:
        return False
    try:
        importlib.import_module("torch_npu")
    except Exception as exc:  # noqa: BLE001 - any failure inside a vendor extension means "no usable NPU"
        reason = f"{type(exc).__name__}: {exc}".strip()
        if requested:
            raise DeviceError(
                f"--device npu: torch_npu is installed but cannot be loaded ({reason}).",
                "install the Ascend CANN toolkit and driver and `source set_env.sh` from it, "
                "or use --device cpu / cuda.",
            ) from None
        logger.warning("torch_npu is installed but cannot be loaded (%s); NPUs are ignored.", reason)
        sys.modules["torch_npu"] = None  # type: ignore[assignment]  # "not installed" for transformers' probes too
        return False
    os.environ[BACKEND_AUTOLOAD_ENV] = "1"
    return True


def _npu_available(requested: bool = False) -> bool:
    return load_npu_backend(requested) and bool(torch.npu.is_available())  # type: ignore[attr-defined]


def _device_count(kind: str, requested: bool = False) -> int:
    if kind == "cuda":
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    if kind == "npu":
        return torch.npu.device_count() if _npu_available(requested) else 0  # type: ignore[attr-defined]
    return 0


def check_available(device: DeviceSpec) -> DeviceSpec:
    """Raise DeviceError when an explicitly requested accelerator (or index) is not there."""
    if device.type == "cpu":
        return device
    count = _device_count(device.type, requested=True)
    if count == 0:
        hint = "install the `npu` extra and the Ascend driver" if device.type == "npu" else "check the CUDA driver"
        raise DeviceError(f"--device {device}: no {device.type.upper()} device is available on this machine.",
                          f"{hint}, or use --device cpu.")
    missing = [i for i in device.indices or () if i >= count]
    if missing:
        raise DeviceError(f"--device {device}: index {missing[0]} does not exist; this machine has {count} {device.type} device(s).",
                          f"use indices 0..{count - 1}.")
    return device


def default_device() -> DeviceSpec:
    """NPU if present, else CUDA if present, else CPU."""
    for kind in ("npu", "cuda"):
        if _device_count(kind):
            return DeviceSpec(kind, None)
    return DeviceSpec("cpu", None)


def resolve_device(text: str | None) -> DeviceSpec:
    requested = parse_device(text) if text is not None else None
    if requested is None or requested.type != "npu":
        # transformers imports torch_npu whenever it is installed: a broken one must be found (and hidden) here
        load_npu_backend(requested=False)
    if text is None:
        device = default_device()
        logger.info("No --device given: using %s.", device)
        return device
    return check_available(requested)
