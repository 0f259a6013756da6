"""The tune strategy file: every mistake is one clear message naming the field."""

from __future__ import annotations

import copy

import pytest
import yaml

from modelslim_core.errors import ConfigError
from modelslim.app.evaluators import build_evaluator
from modelslim.app.tune_config import load_tune_file, parse_duration, with_rollback, without_item

TEMPLATE = {"apiversion": "modelslim_v1", "spec": {"process": [
    {"type": "linear_quant", "qconfig": {"weight": {"scope": "per_channel", "dtype": "int8", "symmetric": True,
                                                   "method": "minmax"}}, "include": ["*"]}],
    "save": [{"type": "ascendv1_saver"}]}}
GOOD = {"strategy": {"type": "binary_fallback", "template": TEMPLATE, "rollback_path": "spec.process.0.exclude"},
        "evaluation": {"type": "perplexity", "max_ratio": 1.05}}


def load(tmp_path, document) -> tuple:
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    strategy, evaluation = load_tune_file(str(path))
    return strategy, build_evaluator(evaluation, f"{path}: evaluation")


def changed(path: str, value) -> dict:
    document = copy.deepcopy(GOOD)
    node = document
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return document


def test_a_good_file_loads_and_the_rollback_list_is_created(tmp_path):
    strategy, evaluator = load(tmp_path, GOOD)
    assert strategy.type == "binary_fallback" and type(evaluator).__name__ == "PerplexityEvaluator"
    config = with_rollback(strategy.template, strategy.rollback_path, ["model.layers.1.*", "lm_head"])
    assert config["spec"]["process"][0]["exclude"] == ["model.layers.1.*", "*lm_head*"]  # bare names become *name*
    assert "exclude" not in strategy.template["spec"]["process"][0] or strategy.template["spec"]["process"][0]["exclude"] == []


@pytest.mark.parametrize("path, value, words", [
    ("strategy.type", "greedy", ["strategy", "type", "binary_fallback"]),
    ("strategy.rollback_path", ..., ["rollback_path"]),
    ("strategy.rollback_path", "spec.process.3.exclude", ["rollback_path", "spec.process.3", "1 items"]),
    ("strategy.rollback_path", "spec.nothing.exclude", ["rollback_path", "spec.nothing"]),
    ("strategy.rollback_path", "spec.process.0.qconfig", ["rollback_path", "not a list"]),
    ("strategy.template.apiversion", "modelslim_v0", ["template.apiversion", "modelslim_v1"]),
    ("strategy.rollback_candidates", "model.layers.0.*", ["rollback_candidates"]),
    ("strategy.analysis_scope", "block", ["analysis_scope", "layer"]),
    ("strategy.surprise", 1, ["surprise"]),
    ("evaluation.type", ..., ["evaluation.type"]),
    ("evaluation.type", "magic", ["evaluation.type", "magic", "perplexity", "service_oriented", "modelslim.evaluators"]),
    ("evaluation.max_ratio", 0.5, ["max_ratio"]),
    ("evaluation.max_ratio", ..., ["max_ratio"]),
])
def test_mistakes_name_the_field(tmp_path, path, value, words):
    with pytest.raises(ConfigError) as error:
        load(tmp_path, changed(path, value))
    text = f"{error.value.message} {error.value.hint}"
    assert all(word in text for word in words), text


def test_service_oriented_fields(tmp_path):
    evaluation = {"type": "service_oriented", "evaluator": {"command": "bench"},
                  "demand": {"expectations": [{"dataset": "gsm8k", "target": 80, "tolerance": 1},
                                              {"dataset": "gsm8k", "target": 70}]}}
    with pytest.raises(ConfigError, match="gsm8k.*twice"):
        load(tmp_path, {**GOOD, "evaluation": evaluation})
    evaluation["demand"]["expectations"] = []
    with pytest.raises(ConfigError, match="expectations"):
        load(tmp_path, {**GOOD, "evaluation": evaluation})
    del evaluation["evaluator"]
    evaluation["demand"]["expectations"] = [{"dataset": "gsm8k", "target": 80}]
    with pytest.raises(ConfigError, match="evaluator"):
        load(tmp_path, {**GOOD, "evaluation": evaluation})


def test_standing_high_needs_strategies_and_a_linear_quant(tmp_path):
    document = changed("strategy.type", "standing_high")
    with pytest.raises(ConfigError, match="anti_outlier_strategies"):
        load(tmp_path, document)
    document["strategy"]["anti_outlier_strategies"] = [[{"type": "smooth_quant"}]]
    document["strategy"]["template"]["spec"]["process"][0]["type"] = "float_sparse"
    with pytest.raises(ConfigError, match="linear_quant"):
        load(tmp_path, document)


def test_durations():
    assert parse_duration("2H") == 7200 and parse_duration("1D") == 86400 and parse_duration("3d4h") == 273600
    assert parse_duration("90M") == 5400 and parse_duration("45") == 45
    with pytest.raises(ValueError, match="2H"):
        parse_duration("soon")


WEIGHT = {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}
GROUP = {"apiversion": "modelslim_v1", "spec": {"process": [{"type": "group", "configs": [
    {"type": "linear_quant", "qconfig": {"weight": WEIGHT}, "include": ["*self_attn*"]},
    {"type": "linear_quant", "qconfig": {"weight": WEIGHT}, "include": ["*mlp.experts.*"]}]}],
    "save": [{"type": "ascendv1_saver"}]}}


def test_a_group_item_rolls_back_through_the_children_that_select_the_layers(tmp_path):
    strategy, _ = load(tmp_path, {**GOOD, "strategy": {**GOOD["strategy"], "template": GROUP}})
    layers = {"model.layers.1.*": ["model.layers.1.self_attn.q_proj", "model.layers.1.mlp.experts.0.up_proj"],
              "model.layers.0.mlp.experts.*": ["model.layers.0.mlp.experts.0.up_proj"]}
    config = with_rollback(strategy.template, strategy.rollback_path, list(layers), layers)
    group = config["spec"]["process"][0]
    assert "exclude" not in group  # a group has no exclude of its own
    assert [child["exclude"] for child in group["configs"]] == [["model.layers.1.*"],
                                                                ["model.layers.1.*", "model.layers.0.mlp.experts.*"]]
    unknown = with_rollback(GROUP, "spec.process.0.exclude", ["lm_head"])  # a user's candidate: every child
    assert [child["exclude"] for child in unknown["spec"]["process"][0]["configs"]] == [["*lm_head*"]] * 2


def test_a_round_drops_the_processor_its_rollback_emptied_then_the_empty_group():
    once = without_item(GROUP, "spec.process[0].configs[0]")  # the path a selection refusal names
    assert [child["include"] for child in once["spec"]["process"][0]["configs"]] == [["*mlp.experts.*"]]
    assert without_item(once, "spec.process[0].configs[0]")["spec"]["process"] == []
    assert len(GROUP["spec"]["process"][0]["configs"]) == 2  # copies, the template is untouched
