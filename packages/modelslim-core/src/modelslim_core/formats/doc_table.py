"""docs/formats.md's per-tag table, generated from the tag registry so the document cannot drift from the code.

`python -m modelslim_core.formats.doc_table docs/formats.md` rewrites the table between its two marker lines;
tests/engines/test_formats_doc.py fails when the document and the registry disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

from modelslim_core.formats.registry import (ENGINE_VERSIONS, MINDIE_SD, VLLM_ASCEND, VLLM_ASCEND_310P, Support,
                                             TagFormat, TagRegistry)

START = "<!-- tag table: generated from modelslim_core/formats/tags.py; do not edit by hand -->"
END = "<!-- end of tag table -->"
ENGINES = (VLLM_ASCEND, VLLM_ASCEND_310P, MINDIE_SD)
#: Tags with a per-group int weight variant (quant/schemes.py EXPORT_TYPES), for the "per channel only" note.
_PER_GROUP_VARIANTS = frozenset({"W8A8_DYNAMIC", "W8A16", "W4A4_DYNAMIC"})


def _loads(fmt: TagFormat, support: Support) -> str:
    notes = []
    if fmt.tag in _PER_GROUP_VARIANTS and not support.per_group:
        notes.append("per-channel scales only")
    if not support.asymmetric_weights:
        notes.append("symmetric weights only")
    if support.experts_only:
        notes.append("MoE experts only")
    if support.mla_only:
        notes.append("MLA attention only")
    return "loads" + (f" ({', '.join(notes)})" if notes else "")


def _bits(fmt: TagFormat) -> str:
    return f"W{fmt.weight_bits}A{fmt.act_bits}" if fmt.weight_bits else "-"


def render(registry: TagRegistry) -> str:
    """The markdown table: one row per registered tag, one column per checked engine."""
    engines = " | ".join(ENGINE_VERSIONS[engine] for engine in ENGINES)
    lines = [f"| tag | bits | written by | {engines} | where refused, instead |",
             "|---" * (4 + len(ENGINES)) + "|"]
    for fmt in registry:
        cells = [_loads(fmt, fmt.engines[engine]) if engine in fmt.engines else "refused" for engine in ENGINES]
        savers = ", ".join(f"`{saver}`" for saver in sorted(fmt.savers)) or "-"
        instead = fmt.alternative if fmt.alternative and "refused" in cells else "-"
        lines.append(f"| `{fmt.tag}` | {_bits(fmt)} | {savers} | {' | '.join(cells)} | {instead} |")
    return "\n".join(lines)


def block(registry: TagRegistry) -> str:
    return f"{START}\n{render(registry)}\n{END}"


def current_block(text: str) -> str | None:
    """The generated block in a document, or None without markers."""
    if START not in text or END not in text:
        return None
    return text[text.index(START): text.index(END) + len(END)]


def rewrite(path: Path, registry: TagRegistry) -> bool:
    """Replace the document's table with the registry's; True when it changed."""
    text = path.read_text(encoding="utf-8")
    old = current_block(text)
    if old is None:
        raise ValueError(f"{path} has no tag-table markers ({START!r} ... {END!r})")
    new = text.replace(old, block(registry))
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    from modelslim_core.formats.tags import TAGS

    changed = rewrite(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/formats.md"), TAGS)
    print("updated" if changed else "up to date")
