"""include/exclude matching of module names (docs/algorithms.md, "Name matching").

Exact equality first, then shell-style wildcards against the full dotted name: `*` also crosses dots,
`?`, `[abc]`, `[!abc]` work, and `{a,b}` / `{1..5}` expand. Matching is case-sensitive. A module also answers
to its other names (`aliases`: the checkpoint's name when transformers renames the family on load, so configs
written against the files on disk select the same layers). The filter remembers which patterns ever matched
so a run can warn about patterns that selected nothing (usually a typo).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import Field
from wcmatch import fnmatch

from modelslim_core.protocol.validation import StrictModel

logger = logging.getLogger(__name__)

_FLAGS = fnmatch.BRACE | fnmatch.CASE


def pattern_matches(pattern: str, name: str) -> bool:
    return pattern == name or fnmatch.fnmatch(name, pattern, flags=_FLAGS)


#: A module name -> its other names (adapter.name_aliases).
Aliases = Callable[[str], list[str]]


def adapter_aliases(context: Any) -> Aliases | None:
    """The run's name aliases (the model adapter's), if it has any."""
    return getattr(getattr(context, "adapter", None), "name_aliases", None)


class NameFilter:
    """Selects names matching any include pattern and no exclude pattern (by the name or one of its aliases)."""

    def __init__(self, include: Sequence[str], exclude: Sequence[str], aliases: Aliases | None = None):
        self.include = list(include)
        self.exclude = list(exclude)
        self.aliases = aliases
        self._used: set[str] = set()

    def _matching(self, patterns: list[str], names: list[str]) -> list[str]:
        return [p for p in patterns if any(pattern_matches(p, name) for name in names)]

    def __call__(self, name: str) -> bool:
        names = [name, *(self.aliases(name) if self.aliases else [])]
        included = self._matching(self.include, names)
        if not included:
            return False
        self._used.update(included)
        excluded = self._matching(self.exclude, names)
        self._used.update(excluded)
        return not excluded

    @property
    def used_patterns(self) -> list[str]:
        return sorted(self._used)

    def mark_used(self, patterns: list[str]) -> None:
        self._used.update(patterns)

    def unmatched_patterns(self) -> list[str]:
        """Patterns (other than a bare `*`) that never matched a name."""
        return [p for p in dict.fromkeys(self.include + self.exclude) if p != "*" and p not in self._used]

    def warn_unmatched(self, owner: str) -> None:
        for pattern in self.unmatched_patterns():
            logger.warning("%s: pattern %r matched no layer; check its spelling.", owner, pattern)


class LayerSelection(StrictModel):
    """The `include` / `exclude` fields of processors that select layers by name."""

    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(default_factory=list)

    def name_filter(self, aliases: Aliases | None = None) -> NameFilter:
        return NameFilter(self.include, self.exclude, aliases)


class TracksPatternUse:
    """Processor mixin for one `self.filter`: which patterns matched is part of the resume state (a resumed run
    must not warn about patterns that matched before the interruption), and unused ones are warned about at
    the end of the run."""

    filter: NameFilter

    def state_dict(self) -> dict:
        return {"used_patterns": self.filter.used_patterns}

    def load_state_dict(self, state: dict) -> None:
        self.filter.mark_used(state.get("used_patterns", []))

    def post_run(self) -> None:
        self.filter.warn_unmatched(self.config.type)
