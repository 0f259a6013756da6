"""Environment switches about device backends, importable without torch (the CLI sets them before torch loads)."""

#: torch's switch for importing installed device backends (torch_npu) inside `import torch`. The CLI turns it
#: off so a torch_npu without CANN cannot break CPU/CUDA runs; once torch_npu loads, `modelslim_core.devices`
#: turns it back on so spawned data-parallel workers get the backend too.
BACKEND_AUTOLOAD_ENV = "TORCH_DEVICE_BACKEND_AUTOLOAD"
