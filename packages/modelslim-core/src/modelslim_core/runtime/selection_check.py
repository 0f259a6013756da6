"""A processor whose include/exclude selects none of the model's linear layers fails the run when the model
is loaded, before any calibration.

Such a config is always a mistake (a typo, or names written for another family), and running it would exit 0
with the layers it names left float. Layers are matched by module path or by the checkpoint's own names
(runtime/matching.py aliases), exactly as the processors match them during the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modelslim_core.errors import ConfigError
from modelslim_core.runtime.matching import Aliases
from modelslim_core.runtime.processor import ProcessorConfig
from modelslim_core.runtime.unit import Unit

class EmptySelectionError(ConfigError):
    """A processor selects no linear layer; `path` is its YAML path (callers that build configs may drop it)."""

    def __init__(self, path: str, message: str, hint: str):
        super().__init__(message, hint)
        self.path = path


#: How many layer names a refusal shows as examples.
EXAMPLES = 3


def _examples(names: list[str], aliases: Aliases | None) -> str:
    shown = []
    for name in names[:EXAMPLES]:
        others = aliases(name) if aliases else []
        shown.append(f"{name} (in the checkpoint: {others[0]})" if others else name)
    return ", ".join(shown)


def check_selections(configs: Iterable[ProcessorConfig], linear_names: list[str], aliases: Aliases | None) -> None:
    """ConfigError for the first processor (or autoround strategy) that selects no linear of the model."""
    for config in configs:
        for path, selection in config.linear_selections():
            name_filter = selection.name_filter(aliases)
            if any(name_filter(name) for name in linear_names):
                continue
            raise EmptySelectionError(
                path,
                f"{path}: include {selection.include} with exclude {selection.exclude} selects none of the model's "
                f"{len(linear_names)} linear layers, so nothing it configures would be applied and they would stay "
                "float.",
                f"write the patterns against the layer names, e.g. {_examples(linear_names, aliases) or 'none'} "
                "(module paths and the checkpoint's tensor names both match), or remove the processor; "
                "`msmodelslim quant ... --dry-run` lists every layer.",
            )


def check_layer_selections(adapter: Any, units: list[Unit], configs: Iterable[ProcessorConfig]) -> None:
    """check_selections over the linear sites the adapter offers in `units` (a loaded model or its skeleton)."""
    names = [site.name for unit in units for site in adapter.linear_sites(unit)]
    check_selections(configs, names, getattr(adapter, "name_aliases", None))
