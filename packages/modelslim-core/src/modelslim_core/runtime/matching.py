"""include/exclude matching of module names (docs/algorithms.md, "Name matching").

Exact equality first, then shell-style wildcards against the full dotted name: `*` also crosses dots,
`?`, `[abc]`, `[!abc]` work, and `{a,b}` / `{1..5}` expand. Matching is case-sensitive. The filter remembers
which patterns ever matched so a run can warn about patterns that selected nothing (usually a typo).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydantic import Field
from wcmatch import fnmatch

from modelslim_core.protocol.validation import StrictModel

logger = logging.getLogger(__name__)

_FLAGS = fnmatch.BRACE | fnmatch.CASE


def pattern_matches(pattern: str, name: str) -> bool:
    return pattern == name or fnmatch.fnmatch(name, pattern, flags=_FLAGS)


class NameFilter:
    """Selects names matching any include pattern and no exclude pattern."""

    def __init__(self, include: Sequence[str], exclude: Sequence[str]):
        self.include = list(include)
        self.exclude = list(exclude)
        self._used: set[str] = set()

    def __call__(self, name: str) -> bool:
        included = [p for p in self.include if pattern_matches(p, name)]
        if not included:
            return False
        self._used.update(included)
        excluded = [p for p in self.exclude if pattern_matches(p, name)]
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

    def name_filter(self) -> NameFilter:
        return NameFilter(self.include, self.exclude)


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
