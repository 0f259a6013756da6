"""Process environment the CLI sets before anything imports torch or transformers.

- never reach a model hub (everything is local);
- `import torch` must not import installed device backends by itself: with the `npu` extra on a host
  without CANN, torch's backend autoload fails inside `import torch` ("Failed to load the backend
  extension: torch_npu") and breaks CPU and CUDA runs. torch_npu is imported by `modelslim_core.devices`
  only when an NPU is asked for or probed, where a failure has a clear message.
"""

from __future__ import annotations

import os

from modelslim_core.devices_env import BACKEND_AUTOLOAD_ENV


def prepare() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault(BACKEND_AUTOLOAD_ENV, "0")
