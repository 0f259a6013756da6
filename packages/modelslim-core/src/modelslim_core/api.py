"""The public API for plugins: import from here, not from internal module paths.

Everything a third-party processor, saver, runner or model adapter needs is re-exported here, and this list
is what the project keeps stable across releases; the modules behind it may move. docs/plugin-guide.md walks
through a complete processor plugin built on it.
"""

from __future__ import annotations

from modelslim_core import registry
from modelslim_core.errors import (
    CheckpointError,
    ConfigError,
    DatasetError,
    ModelError,
    ModelSlimError,
    PluginError,
    QuantizationError,
    SaveError,
    UnsupportedError,
)
from modelslim_core.models.base import ModelAdapter
from modelslim_core.runtime.context import DeviceSpec, RunContext
from modelslim_core.runtime.matching import LayerSelection, NameFilter
from modelslim_core.runtime.processor import Processor, ProcessorConfig
from modelslim_core.runtime.saver import Saver, SaverConfig
from modelslim_core.runtime.unit import LinearSite, Unit, UnitInput

#: Entry-point groups a plugin package registers its classes under (pyproject `[project.entry-points."..."]`).
PROCESSORS = registry.PROCESSORS
SAVERS = registry.SAVERS
RUNNERS = registry.RUNNERS
SERVICES = registry.SERVICES
MODEL_ADAPTERS = registry.MODEL_ADAPTERS
PRACTICE_DIRS = registry.PRACTICE_DIRS
CALIB_DIRS = registry.CALIB_DIRS

__all__ = [
    "CALIB_DIRS",
    "MODEL_ADAPTERS",
    "PRACTICE_DIRS",
    "PROCESSORS",
    "RUNNERS",
    "SAVERS",
    "SERVICES",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "DeviceSpec",
    "LayerSelection",
    "LinearSite",
    "ModelAdapter",
    "ModelError",
    "ModelSlimError",
    "NameFilter",
    "PluginError",
    "Processor",
    "ProcessorConfig",
    "QuantizationError",
    "RunContext",
    "SaveError",
    "Saver",
    "SaverConfig",
    "Unit",
    "UnitInput",
    "UnsupportedError",
]
