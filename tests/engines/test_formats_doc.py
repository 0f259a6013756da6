"""docs/formats.md's per-tag engine table is the tag registry's, row for row."""

from __future__ import annotations

from modelslim_core.formats.doc_table import block, current_block, render
from modelslim_core.formats.tags import TAGS
from tests.tiny_models import REPO


def test_the_documented_table_matches_the_registry():
    documented = current_block((REPO / "docs" / "formats.md").read_text(encoding="utf-8"))
    assert documented == block(TAGS), "regenerate: uv run python -m modelslim_core.formats.doc_table docs/formats.md"


def test_every_tag_has_a_row_with_engine_versions():
    table = render(TAGS)
    assert table.splitlines()[0].startswith("| tag | bits | written by | vllm-ascend 0.23.0 | vllm-ascend 0.23.0 (310P path) "
                                            "| mindiesd 3.1.0 |")
    for tag in TAGS.tags():
        assert f"| `{tag}` |" in table
    assert "| `W4A8_DYNAMIC` | W4A8 | `ascendv1_saver`, `compressed_tensors_saver` | loads (symmetric weights only, " \
           "MoE experts only) | refused | refused |" in table
