"""include/exclude name matching (docs/algorithms.md, "Name matching")."""

from modelslim_core.runtime.matching import NameFilter, pattern_matches


def test_star_crosses_dots_and_exact_names_match():
    assert pattern_matches("*", "model.layers.0.mlp.down_proj")
    assert pattern_matches("*down_proj*", "model.layers.0.mlp.down_proj")
    assert pattern_matches("model.layers.0.mlp.up_proj", "model.layers.0.mlp.up_proj")
    assert not pattern_matches("*self_attn*", "model.layers.0.mlp.up_proj")


def test_brace_alternatives_and_ranges_expand():
    assert pattern_matches("model.layers.{0,2}.mlp.*", "model.layers.2.mlp.up_proj")
    assert not pattern_matches("model.layers.{0,2}.mlp.*", "model.layers.1.mlp.up_proj")
    assert pattern_matches("model.layers.{1..3}.*", "model.layers.3.self_attn.q_proj")
    assert not pattern_matches("model.layers.{1..3}.*", "model.layers.4.self_attn.q_proj")


def test_character_classes_and_case_sensitivity():
    assert pattern_matches("*.[qk]_proj", "model.layers.0.self_attn.k_proj")
    assert not pattern_matches("*.[!qk]_proj", "model.layers.0.self_attn.k_proj")
    assert not pattern_matches("*Q_PROJ", "model.layers.0.self_attn.q_proj")


def test_exclude_wins_over_include_and_unused_patterns_are_reported():
    name_filter = NameFilter(["*mlp*", "*typo_proj*"], ["*down_proj"])
    assert name_filter("model.layers.0.mlp.up_proj")
    assert not name_filter("model.layers.0.mlp.down_proj")
    assert not name_filter("model.layers.0.self_attn.q_proj")
    assert name_filter.unmatched_patterns() == ["*typo_proj*"]
