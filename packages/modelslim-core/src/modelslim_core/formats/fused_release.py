"""The load-time refusal of a config that quantizes linears the model's release stores fused with others.

Some releases keep several linears in one tensor (Step-3.7 stacks each MoE layer's routed experts into
`moe.*_proj` of shape [experts, ...]). Savers that write the release's own layout put such a linear back into its
fused tensor, which has room for float weights only: a quantized one has scales and codes per expert that the
fused tensor cannot hold. Without this check the run would calibrate for hours and fail in the saver; with it the
YAML item is refused before the model is loaded, whatever serving engine `--tag` names.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from modelslim_core import registry
from modelslim_core.errors import ConfigError
from modelslim_core.formats.engines import processor_configs
from modelslim_core.formats.tags import TAGS


def _quantizes(tag: str) -> bool:
    fmt = TAGS.get(tag)
    return fmt is None or fmt.kind == "linear"  # FLOAT and extras (a folded rotation) leave weights float


def _selected(include: tuple[str, ...], exclude: tuple[str, ...], names: list[str]) -> list[str]:
    return [name for name in names if any(fnmatchcase(name, pattern) for pattern in include)
            and not any(fnmatchcase(name, pattern) for pattern in exclude)]


def check_fused_release_linears(spec: Any, adapter: Any, source: str) -> None:
    """ConfigError when a quantizing item selects a linear that a release-layout saver must write fused."""
    probes = list(getattr(adapter, "release_fused_linears", lambda: [])())
    if not probes:
        return
    savers = [saver.type for saver in getattr(spec, "save", []) or []
              if getattr(registry.load(registry.SAVERS, saver.type), "writes_release_layout", False)]
    if not savers:
        return
    for config in processor_configs(spec):
        for scheme in config.layer_schemes():
            if not _quantizes(scheme.tag):
                continue
            hit = _selected(scheme.include, scheme.exclude, probes)
            if hit:
                raise ConfigError(
                    f"{source}: {scheme.path} quantizes {hit[0]} as {scheme.tag} (include {list(scheme.include)}), "
                    f"but the {adapter.family} release stores that linear fused with others in one tensor, which "
                    f"{savers[0]} can only write float.",
                    "keep those layers float: add the matching pattern (e.g. '*mlp.experts.*') to this item's "
                    "exclude.",
                )
