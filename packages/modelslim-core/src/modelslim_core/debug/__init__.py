"""Run observations: debug records (`--debug`, tensors allowed) and report statistics (always, scalars)."""

from modelslim_core.debug.persistence import DEBUG_DIR, load_debug_info, write_debug_info
from modelslim_core.debug.recorder import Recorder

__all__ = ["DEBUG_DIR", "Recorder", "load_debug_info", "write_debug_info"]
