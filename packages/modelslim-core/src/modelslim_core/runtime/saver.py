"""The saver protocol.

Savers write each unit as soon as the runner has finished it (so a layer-wise run can drop the unit's
weights right after), then whatever lies outside the units (embeddings, final norm, lm_head), and commit
the output only in `finish`. `abort` must leave nothing that looks like a complete checkpoint.
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from modelslim_core.protocol.validation import PluginConfig
from modelslim_core.runtime.context import RunContext
from modelslim_core.runtime.unit import Unit


class SaverConfig(PluginConfig):
    """Base of saver configs; each subclass declares `type: Literal['<its name>']`."""


class Saver:
    config_class: ClassVar[type[SaverConfig]]
    #: Layer tags (W8A8, W8A8_DYNAMIC, ...) this saver can write; None: any.
    writes: ClassVar[frozenset[str] | None] = None
    #: False for a format with no place for per-group parameters (no group_size): per-group layers are refused.
    writes_per_group: ClassVar[bool] = True
    #: True for savers that write the release's own tensor names and fused tensors (the adapter's
    #: `saved_tensor_name` / `fused_checkpoint_part`): a linear stored fused can then only be written float.
    writes_release_layout: ClassVar[bool] = False

    def __init__(self, config: SaverConfig, context: RunContext):
        self.config = config
        self.context = context

    def pre_run(self, model: nn.Module) -> None:
        """Prepare the output directory."""

    def save_unit(self, unit: Unit) -> None:
        """Write one finished unit."""

    def save_remaining(self, model: nn.Module, unit_names: list[str]) -> None:
        """Write every parameter outside the units."""

    def finish(self) -> None:
        """Commit the output (the completeness marker is written last)."""

    def abort(self) -> None:
        """Remove partial output after a failure."""

    def state_dict(self) -> dict:
        """JSON-able state after the last saved unit (partial files stay on disk), for resuming."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict` in a new process."""
