"""Cyclic garbage collection tuned for the one-shot `msmodelslim` process.

Why: importing torch and transformers creates ~400k Python objects (modules, classes, functions) that live
until the process exits. CPython's cyclic collector re-traverses every one of them at each full collection
(seven during the README's main job, most of them while those imports run) and once more at interpreter
exit: measured on the demo run, ~13% of its CPU time went to collections that freed nothing.

So the CLI process imports torch and transformers with the collector off, then moves everything alive
(`gc.freeze`: nothing but module-level objects exists yet) to the permanent generation, which collections
skip, and turns the collector back on: objects created by the run itself (models, activations) are collected
as usual, so a long run frees its cyclic garbage exactly as before. At exit everything is frozen once more,
so the interpreter's teardown does not traverse the whole heap a last time.

Only the process that owns the interpreter does this (`main()` without an argument list): callers running
`main(argv)` in their own process, such as tests, keep their collector untouched.
"""

from __future__ import annotations

import gc
import importlib

#: Commands whose first step imports torch and transformers anyway (list, convert-config and -h do not).
HEAVY_COMMANDS = frozenset({"quant", "eval", "analyze", "tune"})
#: What those commands import before loading a model: importing them up front changes when, not whether.
#: transformers' model code (activations, modeling layers: torch._dynamo, torch.distributed.tensor) is not
#: here: plain Qwen2 checkpoints are built without it (modelslim_core/models/qwen2_native.py).
HEAVY_MODULES = ("torch", "transformers")


def _load_device_backend(device: str | None) -> None:
    """transformers imports torch_npu whenever it is installed, and a torch_npu without CANN fails inside that
    import: load it first (or hide a broken one, or refuse it when `--device npu` asked for it) exactly as the
    run's device resolution does (modelslim_core.devices.load_npu_backend)."""
    from modelslim_core.devices import load_npu_backend, parse_device  # noqa: PLC0415

    load_npu_backend(requested=device is not None and parse_device(device).type == "npu")


def import_frozen(command: str | None, device: str | None = None) -> None:
    """Import the heavy libraries of `command` uncollected, then freeze what exists (see the module doc);
    `device` is the command's --device, which decides whether a torch_npu that cannot load is an error."""
    if command not in HEAVY_COMMANDS:
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        importlib.import_module(HEAVY_MODULES[0])
        _load_device_backend(device)
        for name in HEAVY_MODULES[1:]:
            importlib.import_module(name)
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def freeze_for_exit() -> None:
    """Everything alive at the end of the command is freed by the teardown anyway: spare it a last full scan."""
    gc.freeze()
