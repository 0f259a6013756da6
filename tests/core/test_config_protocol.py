"""The YAML protocol: safe loading, apiversion dispatch, and errors that name the YAML path."""

from __future__ import annotations

import pytest

from modelslim_core.errors import ConfigError
from modelslim_core.protocol.config import parse_quant_config
from modelslim_core.protocol.yaml_io import dump_yaml, load_yaml_text

W8A8_DYNAMIC = {
    "act": {"scope": "per_token", "dtype": "int8", "symmetric": True, "method": "minmax"},
    "weight": {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"},
}


def config(*process, **spec):
    return {"apiversion": "modelslim_v1", "spec": {"process": list(process), "save": [{"type": "ascendv1_saver"}], **spec}}


def linear_quant(qconfig=W8A8_DYNAMIC, **fields):
    return {"type": "linear_quant", "qconfig": qconfig, **fields}


def error_of(raw) -> str:
    with pytest.raises(ConfigError) as info:
        parse_quant_config(raw, "test.yaml")
    return str(info.value)


def test_anchors_and_aliases_resolve_and_dump_expanded():
    text = """
apiversion: modelslim_v1
tmpl: &tmpl
  weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}
spec:
  process:
    - {type: linear_quant, qconfig: *tmpl, include: ["*mlp*"]}
  save: [{type: ascendv1_saver}]
"""
    raw = load_yaml_text(text)
    parsed = parse_quant_config(raw, "t.yaml")
    assert parsed.spec.process[0].qconfig.export_type == "W8A16"
    assert parsed.spec.runner == "auto" and parsed.spec.dataset == "mix_calib.jsonl"
    assert "&" not in dump_yaml(raw) and "*tmpl" not in dump_yaml(raw)


def test_duplicate_keys_are_rejected_with_the_line():
    with pytest.raises(ConfigError, match="duplicate key 'exclude' at line 3"):
        load_yaml_text("include: [a]\nexclude: [b]\nexclude: [c]\n")


def test_malformed_yaml_names_the_line():
    with pytest.raises(ConfigError, match="line 2"):
        load_yaml_text("spec:\n  process: [unclosed\n")


def test_nested_group_errors_carry_the_full_path():
    bad = dict(W8A8_DYNAMIC, act={**W8A8_DYNAMIC["act"], "scope": "per_tokn"})
    message = error_of(config({"type": "group", "configs": [linear_quant(), linear_quant(bad)]}))
    assert "spec.process[0].configs[1].qconfig.act.scope" in message
    assert "'per_tokn' is not allowed" in message and "per_token" in message


def test_unknown_processor_type_lists_known_ones():
    message = error_of(config({"type": "smooth_magic"}))
    assert "spec.process[0].type" in message and "linear_quant" in message and "group" in message


def test_non_mapping_item_hints_at_indentation():
    assert "indentation" in error_of(config("linear_quant"))


@pytest.mark.parametrize(
    "qconfig, fragment",
    [
        ({**W8A8_DYNAMIC, "act": {**W8A8_DYNAMIC["act"], "symmetric": False}}, "act scheme int8/per_token/asym is not supported"),
        ({**W8A8_DYNAMIC, "weight": {**W8A8_DYNAMIC["weight"], "method": "histogram"}}, "weight method 'histogram' is not available"),
        ({**W8A8_DYNAMIC, "weight": {**W8A8_DYNAMIC["weight"], "ext": {"steps": 10}}}, "ext keys ['steps'] are not used"),
        ({"act": {"scope": "per_tensor", "dtype": "int8", "symmetric": True, "method": "minmax"},
          "weight": {"scope": "per_channel", "dtype": "int8", "symmetric": False, "method": "minmax"}}, "cannot be exported"),
        ({"weight": {"scope": "per_channel", "dtype": "int8", "method": "minmax"}}, "symmetric: this field is required"),
        ({"weight": {"scope": "per_channel", "dtype": "int8", "symmetric": "yes", "method": "minmax"}}, "must be true or false"),
    ],
)
def test_unusable_qconfigs_fail_at_load_time(qconfig, fragment):
    message = error_of(config(linear_quant(qconfig)))
    assert fragment in message
    assert "spec.process[0].qconfig" in message


def test_unknown_fields_runner_and_saver_values():
    assert "spec.process[0].includes: unknown field" in error_of(config(linear_quant(includes=["*"])))
    assert "unknown runner 'fast'" in error_of(config(linear_quant(), runner="fast"))
    raw = config(linear_quant())
    raw["spec"]["save"] = [{"type": "ascendv1_saver", "part_file_size": -1}]
    assert "spec.save[0].part_file_size" in error_of(raw)
    raw["spec"]["save"] = []
    assert "spec.save must be a non-empty list" in error_of(raw)


def test_apiversion_errors():
    assert "deprecated" in error_of({"apiversion": "modelslim_v0", "spec": {}}) or "no longer supported" in error_of(
        {"apiversion": "modelslim_v0", "spec": {}}
    )
    assert "modelslim_v1" in error_of({"apiversion": "modelslim_v9", "spec": {}})
    # modelslim-vlm and modelslim-sd are installed in the dev environment: their services validate the spec
    for service in ("multimodal_vlm_modelslim_v1", "multimodal_sd_modelslim_v1"):
        assert "spec.save must be a non-empty list" in error_of({"apiversion": service, "spec": {"save": []}})
    assert "apiversion: this field is required" in error_of({"spec": {}})
    assert "top level must be a mapping" in error_of(["not", "a", "mapping"])


def test_missing_optional_service_names_its_extra(monkeypatch: pytest.MonkeyPatch):
    from modelslim_core import registry

    installed = registry._group
    monkeypatch.setattr(registry, "_group", lambda group: {
        name: ep for name, ep in installed(group).items() if name != "multimodal_vlm_modelslim_v1"})
    registry.load.cache_clear()
    try:
        message = error_of({"apiversion": "multimodal_vlm_modelslim_v1", "spec": {}})
    finally:
        registry.load.cache_clear()
    assert "optional package" in message and "modelslim[vlm]" in message


def test_prior_stages_parse_with_their_own_dataset():
    raw = config(linear_quant(), prior=[{"process": [linear_quant()], "dataset": "other.jsonl"}])
    parsed = parse_quant_config(raw, "t.yaml")
    assert parsed.spec.prior[0].dataset == "other.jsonl"
    assert "spec.prior[0].process" in error_of(config(linear_quant(), prior=[{"process": []}]))
