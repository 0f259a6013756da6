"""Choosing the practice for a quick-quantization request: the six priorities of the reference.

For the requested quant type, then (only if that fails and the user asked for something other than w8a8)
for w8a8: a practice verified for the model and tags, else one verified for the model but not the tags,
else the default pedigree's practice. Anything but an exact, explicitly requested hit comes with a tip, so
the CLI can ask the user to confirm a choice they did not make.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from modelslim_core.errors import UnsupportedError
from modelslim_core.practice.library import Practice, PracticeLibrary
from modelslim_core.practice.metadata import label_matches
from modelslim_core.practice.quant_type import DEFAULT_QUANT_TYPE, parse_quant_type
from modelslim_core.practice.verification import Verdict, verify

#: The service of generation (diffusion) models, whose practices are never LLM ones.
GENERATION_APIVERSION = "multimodal_sd_modelslim_v1"
#: Pedigree whose practices serve any model, checked by label only.
DEFAULT_PEDIGREE = "default"


class _Kind(enum.IntEnum):
    """What kind of practice answered; the value is the offset inside a quant type's three priorities."""

    BEST = 0
    UNTAGGED = 1
    DEFAULT = 2


@dataclass(frozen=True)
class Selection:
    """The chosen practice; `tip` is None only when no confirmation is needed."""

    practice: Practice
    requested_quant_type: str | None
    used_quant_type: str
    level: int
    tip: str | None


@dataclass(frozen=True)
class _Request:
    library: PracticeLibrary
    pedigree: str
    model_type: str
    requested: str | None
    tags: tuple[str, ...]
    #: Config apiversions the model's services accept (None: any); a generation model never gets an LLM practice.
    apiversions: tuple[str, ...] | None = None

    def usable(self, practice: Practice) -> bool:
        return self.apiversions is None or practice.data.get("apiversion") in self.apiversions

    @property
    def own_pedigree_is_default(self) -> bool:
        return self.pedigree.casefold() == DEFAULT_PEDIGREE


def _search(request: _Request, quant_type: str) -> tuple[Practice, _Kind] | None:
    """The three priorities for one quant type: verified with tags, verified without them, default."""
    wanted = parse_quant_type(quant_type)
    if not request.own_pedigree_is_default:
        standby: Practice | None = None
        for practice in request.library.practices(request.pedigree):
            if not request.usable(practice) or not label_matches(practice.metadata.label, wanted):
                continue
            verdict = verify(practice.metadata, request.model_type, list(request.tags))
            if verdict is Verdict.MATCH:
                return practice, _Kind.BEST
            if verdict is Verdict.STANDBY and standby is None:
                standby = practice
        if standby is not None:
            return standby, _Kind.UNTAGGED
    for practice in request.library.practices(DEFAULT_PEDIGREE):
        if request.usable(practice) and label_matches(practice.metadata.label, wanted):
            return practice, _Kind.DEFAULT
    return None


def _tip(request: _Request, practice: Practice, kind: _Kind, used: str) -> str | None:
    """One sentence saying what was chosen and why; None for an explicitly requested best-practice hit."""
    if request.requested == used and kind is _Kind.BEST:
        return None
    model = f"model type {request.model_type}"
    where = f"{practice.metadata.config_id} ({practice.path})"
    parts: list[str] = []
    if request.requested is None:
        parts.append(f"no quant type was given, so the recommended {used} is used")
    elif request.requested != used:
        parts.append(
            f"neither a best nor a default practice supports {request.requested} for {model}, "
            f"so the quant type changed from {request.requested} to {used}"
        )
    if kind is _Kind.BEST:
        parts.append(f"using best practice {where} verified for {model}")
    elif kind is _Kind.UNTAGGED:
        parts.append(
            f"no {used} practice for {model} is verified with tags [{', '.join(request.tags)}]; "
            f"using {where} verified without those tags"
        )
    else:
        owner = (
            f"{model} has no best practices of its own"
            if request.own_pedigree_is_default
            else f"no best practice for {model} (pedigree {request.pedigree}) and {used}"
        )
        parts.append(f"{owner}; using the default {used} practice {where}, accuracy is not guaranteed")
    return "; ".join(parts) + "."


def _available(request: _Request, pedigree: str, model_type: str | None) -> str:
    """Quant types a pedigree can answer (for `model_type` only, unless None), for the failure hint."""
    names = {
        str(practice.metadata.label.quant_label)
        for practice in request.library.practices(pedigree)
        if request.usable(practice)
        and (model_type is None or verify(practice.metadata, model_type, None) is Verdict.MATCH)
    }
    return ", ".join(sorted(names)) or "none"


def _unsupported(request: _Request, tried: list[str]) -> UnsupportedError:
    available = [f"in the default pedigree: {_available(request, DEFAULT_PEDIGREE, None)}"]
    if request.apiversions is not None and GENERATION_APIVERSION in request.apiversions:
        own = _available(request, request.pedigree, request.model_type)
        return UnsupportedError(
            f"no best practice for model type {request.model_type!r} (pedigree {request.pedigree!r}) with quant "
            f"type {' or '.join(tried)}; it is a generation model, so the LLM practices do not apply to it.",
            f"quant types with a practice for {request.model_type}: {own}; pass one of them with --quant_type, "
            "or your own multimodal_sd_modelslim_v1 config with --config_path.",
        )
    if not request.own_pedigree_is_default:
        own = _available(request, request.pedigree, request.model_type)
        available.insert(0, f"for model type {request.model_type} in pedigree {request.pedigree}: {own}")
    return UnsupportedError(
        f"no best practice for model type {request.model_type!r} (pedigree {request.pedigree!r}) "
        f"with quant type {' or '.join(tried)}.",
        f"available quant types {'; '.join(available)}; pass one of them with --quant_type, "
        "or your own config with --config_path.",
    )


def select_practice(
    library: PracticeLibrary,
    pedigree: str,
    model_type: str,
    quant_type: str | None = None,
    tags: list[str] | None = None,
    apiversions: tuple[str, ...] | None = None,
) -> Selection:
    """Pick a practice by the six priorities; UnsupportedError when none applies.

    Only practices whose apiversion is in `apiversions` (the model adapter's services) are considered.
    An invalid `quant_type` is a ConfigError. Without `quant_type` only w8a8 is tried (levels 1-3), and
    w8a8 is the only fallback for any other quant type (levels 4-6).
    """
    requested = str(parse_quant_type(quant_type)) if quant_type is not None else None
    request = _Request(library, pedigree, model_type, requested, tuple(tags or ()), apiversions)
    tried = [requested or DEFAULT_QUANT_TYPE]
    if tried[0] != DEFAULT_QUANT_TYPE:
        tried.append(DEFAULT_QUANT_TYPE)
    for step, used in enumerate(tried):
        found = _search(request, used)
        if found is not None:
            practice, kind = found
            level = 3 * step + kind + 1
            return Selection(practice, requested, used, level, _tip(request, practice, kind, used))
    raise _unsupported(request, tried)
