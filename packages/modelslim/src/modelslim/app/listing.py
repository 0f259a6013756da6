"""`msmodelslim list`: what `quant` can be given, one line each.

Model types come from the model-adapter entry points (plugins included), practices from the same library
`quant --quant_type` looks things up in, quant types from their one-line summaries.
"""

from __future__ import annotations

from collections.abc import Iterator

from modelslim_core.errors import ConfigError
from modelslim_core.quant_types import DEFAULT_QUANT_TYPE, QUANT_TYPE_SUMMARIES

SECTIONS = ("model-types", "practices", "quant-types")


def quant_type_lines() -> Iterator[str]:
    for name, summary in QUANT_TYPE_SUMMARIES.items():
        default = " (default)" if name == DEFAULT_QUANT_TYPE else ""
        yield f"{name:<8} {summary}{default}"


def model_type_lines() -> Iterator[str]:
    from modelslim_core import registry  # noqa: PLC0415 - loads the adapters (and torch) only when listing them

    for name in registry.names(registry.MODEL_ADAPTERS):
        cls = registry.load(registry.MODEL_ADAPTERS, name)
        for model_type in cls.model_types:
            yield f"{model_type:<34} {cls.family} adapter"
        for prefix in cls.model_type_prefixes:
            yield f"{prefix + '*':<34} {cls.family} adapter (any name starting so)"
    yield f"{'(any other name)':<34} default adapter (generic decoder-only LM)"


def practice_lines() -> Iterator[str]:
    from modelslim_core.practice import PracticeLibrary  # noqa: PLC0415

    library = PracticeLibrary.discover()
    for pedigree in library.pedigrees():
        try:
            practices = library.practices(pedigree)
        except ConfigError as exc:
            yield f"{pedigree:<22} cannot be read: {exc}"
            continue
        for practice in practices:
            label = practice.metadata.label.quant_label
            yield f"{pedigree:<22} {str(label):<8} {practice.metadata.config_id:<36} {practice.path}"


_LINES = {"model-types": model_type_lines, "practices": practice_lines, "quant-types": quant_type_lines}


def listing(what: str | None) -> str:
    """The text for one section, or for all three under headings."""
    if what is not None:
        return "\n".join(_LINES[what]())
    return "\n\n".join(f"{section}:\n" + "\n".join(f"  {line}" for line in _LINES[section]()) for section in SECTIONS)
