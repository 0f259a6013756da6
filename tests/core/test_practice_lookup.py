"""The best-practice library and the six-priority lookup, on practice trees built in tmp_path."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelslim_core.errors import ConfigError, UnsupportedError
from modelslim_core.practice import (
    CUSTOM_PRACTICE_REPO_ENV,
    PracticeLibrary,
    PracticeMetadata,
    Verdict,
    label_matches,
    normalize_tag,
    parse_quant_type,
    practice_roots,
    select_practice,
    verify,
)
from modelslim_core.practice import library as library_module
from modelslim_core.protocol.yaml_io import dump_yaml

W8A8 = {"w_bit": 8, "a_bit": 8}
W8A16 = {"w_bit": 8, "a_bit": 16}
W4A8 = {"w_bit": 4, "a_bit": 8}


def write_practice(
    root: Path,
    pedigree: str,
    config_id: str,
    *,
    label: dict[str, Any] = W8A8,
    score: float = 90,
    models: list[str] | None = None,
    tags: dict[str, list[list[str]]] | None = None,
    suffix: str = ".yaml",
) -> Path:
    """Write a minimal valid practice file and return its path."""
    metadata: dict[str, Any] = {"config_id": config_id, "score": score, "label": label}
    if models is not None:
        metadata["verified_model_types"] = models
    if tags is not None:
        metadata["verified_tags"] = tags
    path = root / pedigree / f"{config_id}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml({"apiversion": "modelslim_v1", "spec": {"process": []}, "metadata": metadata}))
    return path


def write_defaults(root: Path, *, w8a8: bool = True) -> None:
    """The default pedigree as shipped: w8a8 and w8a16, score 50."""
    if w8a8:
        write_practice(root, "default", "default-w8a8", score=50)
    write_practice(root, "default", "default-w8a16", label=W8A16, score=50)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A library with defaults and a qwen3 pedigree: Qwen3-32B has w8a8 verified for MindIE on A2."""
    lab = tmp_path / "lab"
    write_defaults(lab)
    write_practice(lab, "qwen3", "qwen3-32b-w8a8", tags={"Qwen3-32B": [["MindIE", "Atlas_A2_Inference"]]})
    return lab


def lookup(root: Path, model_type: str = "Qwen3-32B", quant_type: str | None = "w8a8", tags: list[str] | None = None,
           pedigree: str = "qwen3"):
    return select_practice(PracticeLibrary([root]), pedigree, model_type, quant_type, tags)


# --- the six priorities and the failure -------------------------------------------------------------


def test_level_1_requested_quant_type_and_tags_is_silent(root: Path) -> None:
    selection = lookup(root, tags=["mindie", "atlas_a2_inference"])
    assert (selection.practice.metadata.config_id, selection.level, selection.tip) == ("qwen3-32b-w8a8", 1, None)
    assert (selection.requested_quant_type, selection.used_quant_type) == ("w8a8", "w8a8")


def test_level_1_without_quant_type_still_asks(root: Path) -> None:
    selection = lookup(root, quant_type=None)
    assert (selection.practice.metadata.config_id, selection.level) == ("qwen3-32b-w8a8", 1)
    assert selection.requested_quant_type is None and selection.used_quant_type == "w8a8"
    assert "no quant type was given" in selection.tip


def test_level_2_verified_without_the_users_tags(root: Path) -> None:
    selection = lookup(root, tags=["SGLang"])
    assert (selection.practice.metadata.config_id, selection.level) == ("qwen3-32b-w8a8", 2)
    assert "verified with tags [SGLang]" in selection.tip and "qwen3-32b-w8a8" in selection.tip


def test_level_3_default_practice_of_the_requested_quant_type(root: Path) -> None:
    selection = lookup(root, quant_type="W8A16")
    assert (selection.practice.metadata.config_id, selection.level, selection.used_quant_type) == ("default-w8a16", 3, "w8a16")
    assert "accuracy is not guaranteed" in selection.tip and "Qwen3-32B" in selection.tip


def test_level_4_falls_back_to_w8a8_best_practice(root: Path) -> None:
    selection = lookup(root, quant_type="w4a8")
    assert (selection.practice.metadata.config_id, selection.level) == ("qwen3-32b-w8a8", 4)
    assert (selection.requested_quant_type, selection.used_quant_type) == ("w4a8", "w8a8")
    assert "quant type changed from w4a8 to w8a8" in selection.tip


def test_level_5_w8a8_verified_without_the_users_tags(root: Path) -> None:
    selection = lookup(root, quant_type="w4a8", tags=["SGLang"])
    assert (selection.practice.metadata.config_id, selection.level) == ("qwen3-32b-w8a8", 5)
    assert "changed from w4a8 to w8a8" in selection.tip and "[SGLang]" in selection.tip


def test_level_6_default_w8a8(root: Path) -> None:
    selection = lookup(root, model_type="Qwen3-8B", quant_type="w4a8")
    assert (selection.practice.metadata.config_id, selection.level, selection.used_quant_type) == ("default-w8a8", 6, "w8a8")
    assert "changed from w4a8 to w8a8" in selection.tip and "accuracy is not guaranteed" in selection.tip


def test_nothing_found_names_the_request_and_what_is_available(tmp_path: Path) -> None:
    write_defaults(tmp_path, w8a8=False)
    write_practice(tmp_path, "qwen3", "qwen3-32b-w4a8", label=W4A8, models=["Qwen3-32B"])
    write_practice(tmp_path, "qwen3", "qwen3-8b-w8a8", models=["Qwen3-8B"])
    with pytest.raises(UnsupportedError) as err:
        lookup(tmp_path, quant_type="w8a8c8")
    text = str(err.value)
    for needed in ("'Qwen3-32B'", "'qwen3'", "w8a8c8 or w8a8", "pedigree qwen3: w4a8;", "default pedigree: w8a16",
                   "--config_path", "--quant_type"):
        assert needed in text


def test_w8a8_request_stops_after_the_default_pedigree(tmp_path: Path) -> None:
    write_defaults(tmp_path, w8a8=False)
    with pytest.raises(UnsupportedError, match=r"with quant type w8a8\."):
        lookup(tmp_path, quant_type=None)


# --- pedigrees ---------------------------------------------------------------------------------------


def test_default_pedigree_checks_only_the_label(root: Path) -> None:
    selection = lookup(root, model_type="MyModel", pedigree="default", tags=["whatever"])
    assert (selection.practice.metadata.config_id, selection.level) == ("default-w8a8", 3)
    assert "no best practices of its own" in selection.tip


def test_pedigree_without_a_directory_falls_back_to_default(root: Path) -> None:
    selection = lookup(root, pedigree="llama")
    assert (selection.practice.metadata.config_id, selection.level) == ("default-w8a8", 3)
    assert "pedigree llama" in selection.tip


def test_pedigree_names_compare_case_insensitively_and_yml_counts(tmp_path: Path) -> None:
    write_practice(tmp_path, "Qwen3", "qwen3-yml", models=["Qwen3-32B"], suffix=".yml")
    (tmp_path / "Qwen3" / "notes.txt").write_text("not a practice")
    library = PracticeLibrary([tmp_path])
    assert [p.metadata.config_id for p in library.practices("QWEN3")] == ["qwen3-yml"]
    assert library.pedigrees() == ["Qwen3"]


# --- ordering ----------------------------------------------------------------------------------------


def test_practices_sort_by_score_then_config_id(tmp_path: Path) -> None:
    for config_id, score in [("b", 80), ("c", 95), ("a", 80), ("d", 0.5)]:
        write_practice(tmp_path, "qwen3", config_id, score=score, models=["Qwen3-32B"])
    assert [p.metadata.config_id for p in PracticeLibrary([tmp_path]).practices("qwen3")] == ["c", "a", "b", "d"]
    assert lookup(tmp_path).practice.metadata.config_id == "c"


def test_a_match_beats_a_higher_scored_standby_and_standbys_keep_score_order(tmp_path: Path) -> None:
    mindie = {"Qwen3-32B": [["MindIE"]]}
    write_practice(tmp_path, "qwen3", "standby-high", score=95, tags=mindie)
    write_practice(tmp_path, "qwen3", "standby-low", score=85, tags=mindie)
    write_practice(tmp_path, "qwen3", "match-lowest", score=10, tags={"Qwen3-32B": [["SGLang"]]})
    assert lookup(tmp_path, tags=["sglang"]).practice.metadata.config_id == "match-lowest"
    selection = lookup(tmp_path, tags=["vLLM-Ascend"])
    assert (selection.practice.metadata.config_id, selection.level) == ("standby-high", 2)


# --- verification rules ------------------------------------------------------------------------------


@pytest.mark.parametrize(("given", "verified"), [("vLLM-Ascend", "vllm_ascend"), ("VLLM_ASCEND", "vLLM-Ascend"),
                                                  ("atlas-a2-inference", "Atlas_A2_Inference")])
def test_tags_ignore_case_and_dash_versus_underscore(given: str, verified: str) -> None:
    assert normalize_tag(given) == normalize_tag(verified)


def test_tag_normalisation_applies_in_lookup(tmp_path: Path) -> None:
    write_practice(tmp_path, "qwen3", "vllm", tags={"Qwen3-32B": [["vLLM_Ascend", "Atlas_A3_Inference"]]})
    assert lookup(tmp_path, tags=["VLLM-ascend", "atlas-a3-inference"]).level == 1


def metadata(**fields: Any) -> PracticeMetadata:
    return PracticeMetadata.model_validate({"label": W8A8, **fields})


@pytest.mark.parametrize(
    ("fields", "tags", "verdict"),
    [
        ({"verified_model_types": ["Qwen3-32B"]}, None, Verdict.MATCH),
        ({"verified_model_types": ["Qwen3-32B"]}, ["SGLang"], Verdict.MATCH),  # no tag scenarios for the model
        ({"verified_model_types": ["Qwen3-8B"]}, None, Verdict.NO_MATCH),
        ({"verified_model_types": ["qwen3-32b"]}, None, Verdict.NO_MATCH),  # model types are exact
        ({"verified_model_types": ["Qwen3-8B"], "verified_tags": {"Qwen3-32B": [["MindIE"]]}}, None, Verdict.NO_MATCH),
        ({"verified_model_types": ["Qwen3-32B"], "verified_tags": {"Qwen3-32B": [["MindIE"]]}}, ["SGLang"], Verdict.STANDBY),
        ({"verified_model_types": ["Qwen3-32B"], "verified_tags": {"Qwen3-32B": [["MindIE"]]}}, ["mindie"], Verdict.MATCH),
        ({"verified_model_types": ["Qwen3-32B"], "verified_tags": {"Qwen3-8B": [["MindIE"]]}}, ["SGLang"], Verdict.MATCH),
        ({"verified_tags": {"Qwen3-32B": [["MindIE", "A2"], ["SGLang", "A3"]]}}, ["a3", "sglang"], Verdict.MATCH),
        ({"verified_tags": {"Qwen3-32B": [["MindIE", "A2"], ["SGLang", "A3"]]}}, ["A2", "SGLang"], Verdict.STANDBY),
        ({"verified_tags": {"Qwen3-32B": [["MindIE"]]}}, None, Verdict.MATCH),
        ({"verified_tags": {"Qwen3-32B": []}}, None, Verdict.NO_MATCH),
        ({}, None, Verdict.NO_MATCH),
    ],
)
def test_verified_model_types_and_tags(fields: dict[str, Any], tags: list[str] | None, verdict: Verdict) -> None:
    assert verify(metadata(**fields), "Qwen3-32B", tags) is verdict


@pytest.mark.parametrize(
    ("label", "answers", "refuses"),
    [
        ({**W8A8, "kv_cache": True}, "w8a8c8", "w8a8"),
        (W8A8, "w8a8", "w8a8c8"),
        ({"w_bit": 4, "a_bit": 4, "fa_quant": True}, "w4a4f8", "w4a4f4"),
        ({"w_bit": 4, "a_bit": 4, "fa_quant": True, "fa_bit": 4}, "w4a4f4", "w4a4f8"),
        ({**W8A8, "fa_bit": 8}, "w8a8f8", "w8a8"),
        ({**W8A8, "is_sparse": True}, "w8a8s", "w8a8"),
        ({"w_bit": 16, "a_bit": 16, "is_sparse": True, "format": "float"}, "w16a16s", "w8a8s"),
    ],
)
def test_label_matching(label: dict[str, Any], answers: str, refuses: str) -> None:
    practice_label = metadata(label=label).label
    assert label_matches(practice_label, parse_quant_type(answers))
    assert not label_matches(practice_label, parse_quant_type(refuses))


def test_c8_request_finds_the_kv_cache_practice(tmp_path: Path) -> None:
    write_practice(tmp_path, "qwen3", "plain", score=99, models=["Qwen3-32B"])
    write_practice(tmp_path, "qwen3", "kv", label={**W8A8, "kv_cache": True}, models=["Qwen3-32B"])
    assert lookup(tmp_path, quant_type="w8a8c8").practice.metadata.config_id == "kv"


# --- roots: custom repository, plugins ---------------------------------------------------------------


@dataclass
class FakeEntryPoint:
    """Stands in for importlib.metadata.EntryPoint: a name and a provider callable."""

    name: str
    provider: Callable[[], Any]

    @property
    def value(self) -> str:
        return f"fake_plugin:{self.name}"

    def load(self) -> Callable[[], Any]:
        return self.provider


def use_plugins(monkeypatch: pytest.MonkeyPatch, *eps: FakeEntryPoint) -> None:
    monkeypatch.setattr(library_module, "plugin_entry_points", lambda: sorted(eps, key=lambda ep: ep.name))


def test_custom_repository_beats_plugin_and_builtin_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    custom, plugin, builtin = (tmp_path / name for name in ("custom", "plugin", "builtin"))
    for where in (custom, plugin, builtin):
        write_practice(where, "qwen3", "same-id", models=["Qwen3-32B"])
    monkeypatch.setenv(CUSTOM_PRACTICE_REPO_ENV, str(custom))
    use_plugins(monkeypatch, FakeEntryPoint("builtin", lambda: builtin), FakeEntryPoint("acme", lambda: [str(plugin)]))
    assert practice_roots() == [custom, plugin, builtin]
    library = PracticeLibrary.discover()
    assert [p.path.parent.parent for p in library.practices("qwen3")] == [custom, plugin, builtin]
    assert select_practice(library, "qwen3", "Qwen3-32B", "w8a8").practice.path.is_relative_to(custom)


def test_broken_or_empty_plugins_and_missing_custom_repo_are_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "no-such-repo"
    monkeypatch.setenv(CUSTOM_PRACTICE_REPO_ENV, str(missing))

    def broken() -> Path:
        raise RuntimeError("boom")

    use_plugins(
        monkeypatch,
        FakeEntryPoint("broken", broken),
        FakeEntryPoint("nothing", lambda: None),
        FakeEntryPoint("wrong-type", lambda: 42),
        FakeEntryPoint("gone", lambda: tmp_path / "gone"),
        FakeEntryPoint("good", lambda: tmp_path),
    )
    with caplog.at_level(logging.WARNING):
        assert practice_roots() == [tmp_path]
    assert not missing.exists()
    for needed in (str(missing), "'broken'", "boom", "'wrong-type'", str(tmp_path / "gone")):
        assert needed in caplog.text


def test_empty_custom_repo_variable_means_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CUSTOM_PRACTICE_REPO_ENV, "")
    use_plugins(monkeypatch, FakeEntryPoint("builtin", lambda: tmp_path))
    assert practice_roots() == [tmp_path]


# --- malformed practice files ------------------------------------------------------------------------


def write_raw(root: Path, text: str) -> Path:
    path = root / "qwen3" / "broken.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("apiversion: modelslim_v1\nspec: [unclosed\n", "not valid YAML"),
        ("apiversion: a\napiversion: b\nspec: {}\nmetadata: {label: {w_bit: 8, a_bit: 8}}\n", "duplicate key 'apiversion'"),
        ("- just\n- a list\n", "top level"),
        ("spec: {}\nmetadata: {label: {w_bit: 8, a_bit: 8}}\n", "`apiversion`"),
        ("apiversion: modelslim_v1\nmetadata: {label: {w_bit: 8, a_bit: 8}}\n", "`spec`"),
        ("apiversion: modelslim_v1\nspec: {}\n", "`metadata`"),
        ("apiversion: modelslim_v1\nspec: {}\nmetadata: {label: {w_bit: eight, a_bit: 8}}\n", "metadata.label.w_bit"),
        ("apiversion: modelslim_v1\nspec: {}\nmetadata: {score: -1, label: {w_bit: 8, a_bit: 8}}\n", "metadata.score"),
        ("apiversion: modelslim_v1\nspec: {}\nmetadata: {config_id: x}\n", "metadata.label"),
        ("apiversion: modelslim_v1\nspec: {}\nmetadata: {label: {w_bit: 8, a_bit: 8}, verified_model_type: [A]}\n",
         "metadata.verified_model_type"),
    ],
)
def test_malformed_practice_names_file_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = write_raw(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        PracticeLibrary([tmp_path]).practices("qwen3")
    assert str(path) in str(err.value) and field in str(err.value)


def test_malformed_practice_only_breaks_its_own_pedigree(root: Path) -> None:
    write_raw(root, "apiversion: [\n")
    library = PracticeLibrary([root])
    assert select_practice(library, "llama", "Llama-3-8B", "w8a8").practice.metadata.config_id == "default-w8a8"
    with pytest.raises(ConfigError):
        select_practice(library, "qwen3", "Qwen3-32B", "w8a8")


def test_unknown_quant_type_in_lookup_lists_valid_values(root: Path) -> None:
    with pytest.raises(ConfigError, match="w16a16s"):
        lookup(root, quant_type="w3a3")


def test_anchor_holder_keys_are_kept_and_aliases_expanded(tmp_path: Path) -> None:
    path = write_raw(
        tmp_path,
        "apiversion: modelslim_v1\n"
        "shared: &q {scope: per_channel}\n"
        "spec: {process: [{type: linear_quant, weight: *q}]}\n"
        "metadata: {label: {w_bit: 8, a_bit: 8}, verified_model_types: [Qwen3-32B]}\n",
    )
    practice = PracticeLibrary([tmp_path]).practices("qwen3")[0]
    assert practice.path == path and practice.pedigree == "qwen3"
    assert practice.data["shared"] == practice.data["spec"]["process"][0]["weight"] == {"scope": "per_channel"}
    assert (practice.metadata.config_id, practice.metadata.score) == ("Unknown", 100.0)
