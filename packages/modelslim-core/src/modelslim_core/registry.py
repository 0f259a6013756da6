"""Plugin discovery through Python entry points.

Every extensible kind of object (services, processors, savers, runners, model adapters) lives in its own
entry-point group, so a third-party package adds one by declaring an entry point: no core change, no
import-time side effects. Lookups are lazy and cached per group.
"""

from __future__ import annotations

import difflib
import functools
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from modelslim_core.errors import PluginError

SERVICES = "modelslim.services"
PROCESSORS = "modelslim.processors"
SAVERS = "modelslim.savers"
RUNNERS = "modelslim.runners"
MODEL_ADAPTERS = "modelslim.model_adapters"
PRACTICE_DIRS = "modelslim.practice_dirs"
CALIB_DIRS = "modelslim.calib_dirs"

#: What each group holds, for error messages.
_KIND = {
    SERVICES: "apiversion",
    PROCESSORS: "processor type",
    SAVERS: "saver type",
    RUNNERS: "runner",
    MODEL_ADAPTERS: "model adapter",
}

#: Known names that ship in optional packages, so an error can say what to install.
OPTIONAL_PROVIDERS = {
    (SERVICES, "multimodal_vlm_modelslim_v1"): "the `vlm` extra (pip install 'modelslim[vlm]')",
    (SERVICES, "multimodal_sd_modelslim_v1"): "the `sd` extra (pip install 'modelslim[sd]')",
}


@functools.cache
def _group(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=group):
        found[ep.name] = ep
    return found


def names(group: str) -> list[str]:
    """Registered names of a group, sorted."""
    return sorted(_group(group))


def entry_points_of(group: str) -> list[EntryPoint]:
    """The raw entry points of a group, in name order (used for directory providers)."""
    return [ep for _, ep in sorted(_group(group).items())]


@functools.cache
def load(group: str, name: str) -> Any:
    """Load the object registered as `name` in `group`, or raise a PluginError listing the known names."""
    eps = _group(group)
    if name not in eps:
        kind = _KIND.get(group, group)
        provider = OPTIONAL_PROVIDERS.get((group, name))
        if provider:
            raise PluginError(
                f"{kind} {name!r} is provided by an optional package that is not installed or not yet available.",
                f"install {provider}, or use one of: {', '.join(names(group)) or 'none'}.",
            )
        close = difflib.get_close_matches(str(name), names(group), n=1, cutoff=0.6)
        raise PluginError(
            f"unknown {kind} {name!r}" + (f" (did you mean {close[0]!r}?)." if close else "."),
            f"known {kind}s: {', '.join(names(group)) or 'none'}.",
        )
    try:
        return eps[name].load()
    except Exception as exc:  # a broken plugin must not look like a core bug
        raise PluginError(
            f"the {_KIND.get(group, group)} plugin {name!r} ({eps[name].value}) failed to load: {exc}.",
            "reinstall the package that provides it, or remove it.",
        ) from exc


def clear_cache() -> None:
    """Forget discovered entry points (tests install plugins at run time)."""
    _group.cache_clear()
    load.cache_clear()
