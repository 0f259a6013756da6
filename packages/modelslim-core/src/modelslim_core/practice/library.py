"""The best-practice library: practice files found under one or more root directories.

Layout: `<root>/<pedigree>/<anything>.yaml` (or `.yml`). Roots come from the user's custom repository
(`MSMODELSLIM_CUSTOM_PRACTICE_REPO`) first, then from `modelslim.practice_dirs` entry points, so the user's
own practices win ties against plugin and shipped ones. Files are parsed lazily per pedigree: a broken
practice only breaks lookups for its own pedigree, and the error names the file and field.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

from modelslim_core import registry
from modelslim_core.errors import ConfigError
from modelslim_core.practice.metadata import PracticeMetadata, parse_metadata
from modelslim_core.protocol.yaml_io import load_yaml_file

logger = logging.getLogger(__name__)

#: Environment variable naming the user's own practice repository (highest priority root).
CUSTOM_PRACTICE_REPO_ENV = "MSMODELSLIM_CUSTOM_PRACTICE_REPO"

_PRACTICE_SUFFIXES = (".yaml", ".yml")
_REQUIRED_KEYS: dict[str, type] = {"apiversion": str, "spec": dict, "metadata": dict}
_KIND_NAMES = {str: "a string", dict: "a mapping"}
_SHAPE_HINT = "a practice has the top-level keys apiversion (a string), spec and metadata (mappings)."


@dataclass(frozen=True)
class Practice:
    """One parsed practice file; `data` is the whole document (aliases expanded), ready to re-serialize."""

    path: Path
    pedigree: str
    metadata: PracticeMetadata
    data: dict[str, Any]


def load_practice(path: Path, pedigree: str) -> Practice:
    """Parse and check one practice file; every problem is a ConfigError naming the file and the field."""
    data = load_yaml_file(path)
    if not isinstance(data, dict):
        raise ConfigError(f"practice file {path} must be a mapping at the top level, got {type(data).__name__}.", _SHAPE_HINT)
    for key, kind in _REQUIRED_KEYS.items():
        if key not in data:
            raise ConfigError(f"practice file {path} has no `{key}`.", _SHAPE_HINT)
        if not isinstance(data[key], kind):
            raise ConfigError(
                f"practice file {path}: `{key}` must be {_KIND_NAMES[kind]}, got {type(data[key]).__name__}.",
                _SHAPE_HINT,
            )
    return Practice(path=path, pedigree=pedigree, metadata=parse_metadata(data["metadata"], str(path)), data=data)


def _is_practice_file(path: Path) -> bool:
    return path.suffix.lower() in _PRACTICE_SUFFIXES and path.is_file()


def _ranking(practice: Practice) -> tuple[float, str]:
    return (-practice.metadata.score, practice.metadata.config_id)


class PracticeLibrary:
    """Practices under an ordered list of roots; earlier roots win ties in the (-score, config_id) order."""

    def __init__(self, roots: Sequence[Path]):
        self.roots: tuple[Path, ...] = tuple(Path(root) for root in roots)
        self._parsed: dict[str, list[Practice]] = {}

    @classmethod
    def discover(cls) -> PracticeLibrary:
        """The library seen by `msmodelslim quant`: custom repository, then plugin directories."""
        return cls(practice_roots())

    def _pedigree_dirs(self, pedigree: str | None = None) -> list[Path]:
        """Pedigree directories in root order; names compare case-insensitively."""
        wanted = pedigree.casefold() if pedigree is not None else None
        found: list[Path] = []
        for root in self.roots:
            if not root.is_dir():
                continue
            found.extend(
                child
                for child in sorted(root.iterdir())
                if child.is_dir() and (wanted is None or child.name.casefold() == wanted)
            )
        return found

    def pedigrees(self) -> list[str]:
        """Known pedigree names (first spelling seen), sorted case-insensitively."""
        names: dict[str, str] = {}
        for directory in self._pedigree_dirs():
            names.setdefault(directory.name.casefold(), directory.name)
        return sorted(names.values(), key=str.casefold)

    def practices(self, pedigree: str) -> list[Practice]:
        """Every practice of a pedigree from all roots, best first; empty when no root has that pedigree.

        Parsed on first use and kept, since one lookup consults the same pedigree several times.
        """
        key = pedigree.casefold()
        if key not in self._parsed:
            found = [
                load_practice(path, directory.name)
                for directory in self._pedigree_dirs(pedigree)
                for path in sorted(directory.iterdir())
                if _is_practice_file(path)
            ]
            self._parsed[key] = sorted(found, key=_ranking)
        return list(self._parsed[key])


def plugin_entry_points() -> list[EntryPoint]:
    """The `modelslim.practice_dirs` entry points in name order (the seam tests replace)."""
    return registry.entry_points_of(registry.PRACTICE_DIRS)


def _as_paths(provided: Any) -> list[Path]:
    """Normalise a provider's answer (path, str, list of them, or None); anything else is a TypeError."""
    if provided is None:
        return []
    items = provided if isinstance(provided, (list, tuple)) else [provided]
    for item in items:
        if not isinstance(item, (str, os.PathLike)):
            raise TypeError(f"expected a path, a str, a list of them or None, got {type(item).__name__}")
    return [Path(item) for item in items]


def _existing_dirs(paths: list[Path], source: str) -> list[Path]:
    existing = [path for path in paths if path.is_dir()]
    for path in paths:
        if not path.is_dir():
            logger.warning("practice directory %s from %s does not exist and is skipped.", path, source)
    return existing


def plugin_practice_roots() -> list[Path]:
    """Directories provided by plugins; a failing plugin is a warning naming it, never a crash."""
    roots: list[Path] = []
    for ep in plugin_entry_points():
        source = f"practice_dirs plugin {ep.name!r} ({ep.value})"
        try:
            paths = _as_paths(ep.load()())
        except Exception as exc:  # a third-party plugin must not break quantization
            logger.warning("%s failed and is skipped: %s", source, exc)
            continue
        roots.extend(_existing_dirs(paths, source))
    return roots


def practice_roots() -> list[Path]:
    """All roots in priority order, without duplicates; the custom repository is read, never created."""
    roots: list[Path] = []
    custom = os.environ.get(CUSTOM_PRACTICE_REPO_ENV)
    if custom:
        roots.extend(_existing_dirs([Path(custom).expanduser()], f"${CUSTOM_PRACTICE_REPO_ENV}"))
    roots.extend(plugin_practice_roots())
    unique: dict[Path, Path] = {}
    for root in roots:
        unique.setdefault(root.resolve(), root)
    return list(unique.values())
