"""The error vocabulary of ModelSlim.

Every failure a user can cause is raised as a `ModelSlimError` carrying a one-paragraph message that names
the offending field or path and a hint that says how to fix it. The CLI prints these without a traceback;
anything else is a bug and is reported as one.
"""

from __future__ import annotations


class ModelSlimError(Exception):
    """Base class of all errors meant to be shown to the user."""

    #: Process exit code used by the CLI.
    exit_code: int = 1
    #: Short category shown in front of the message.
    kind: str = "error"

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} Hint: {self.hint}"
        return self.message


class UsageError(ModelSlimError):
    """The command line itself is wrong (argparse-level problems)."""

    exit_code = 2
    kind = "usage error"


class ConfigError(ModelSlimError):
    """A YAML config (or a practice file) is malformed or invalid."""

    kind = "config error"


class ModelError(ModelSlimError):
    """The model directory is missing, incomplete or not loadable."""

    kind = "model error"


class DatasetError(ModelSlimError):
    """Calibration data cannot be found or parsed."""

    kind = "dataset error"


class CheckpointError(ModelSlimError):
    """A saved checkpoint is incomplete, malformed or does not match the model it claims to quantize."""

    kind = "checkpoint error"


class PluginError(ModelSlimError):
    """An unknown plugin name, or a plugin that fails to load."""

    kind = "plugin error"


class UnsupportedError(ModelSlimError):
    """The request is understood but not supported (no practice, unavailable device, ...)."""

    kind = "unsupported"


class DeviceError(ModelSlimError):
    """The requested device is not available."""

    kind = "device error"


class SaveError(ModelSlimError):
    """The output directory cannot be written safely."""

    kind = "save error"


class AbortedError(ModelSlimError):
    """The user declined (or could not be asked) to confirm a fallback."""

    kind = "aborted"


class QuantizationError(ModelSlimError):
    """A layer cannot be quantized as configured (numerically degenerate calibration data, ...)."""

    kind = "quantization error"


class MemoryBudgetError(ModelSlimError):
    """A piece of the model needs more memory than the run may use (--max_memory, or what the host has free)."""

    kind = "memory budget"
