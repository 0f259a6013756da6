"""Whether a label-matching practice was verified for the user's model type and scenario tags.

Three outcomes rather than two: a practice verified for the model but not for the user's tags is still a
usable fallback (STANDBY), preferred over a default practice but only after the user is told.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from modelslim_core.practice.metadata import PracticeMetadata


class Verdict(enum.Enum):
    """How a practice relates to the requested model type and tags."""

    MATCH = "match"
    STANDBY = "standby"
    NO_MATCH = "no_match"


def normalize_tag(tag: str) -> str:
    """Fold case and treat `-` and `_` alike: official practices spell `vLLM-Ascend` and `vllm_ascend` both."""
    return tag.strip().casefold().replace("-", "_")


def _tags_verified(scenarios: Iterable[Iterable[str]], tags: Iterable[str]) -> bool:
    wanted = {normalize_tag(tag) for tag in tags}
    return any(wanted <= {normalize_tag(tag) for tag in scenario} for scenario in scenarios)


def verify(metadata: PracticeMetadata, model_type: str, tags: list[str] | None) -> Verdict:
    """Judge a practice of the model's own pedigree (default practices are never judged, only label-matched).

    With `verified_model_types`, the model type must be listed (exactly); user tags then still count when
    `verified_tags` has scenarios for that model type. Without it, `verified_tags[model_type]` decides.
    """
    scenarios = metadata.verified_tags.get(model_type)
    if metadata.verified_model_types:
        if model_type not in metadata.verified_model_types:
            return Verdict.NO_MATCH
    elif not scenarios:
        return Verdict.NO_MATCH
    if not tags or not scenarios or _tags_verified(scenarios, tags):
        return Verdict.MATCH
    return Verdict.STANDBY
