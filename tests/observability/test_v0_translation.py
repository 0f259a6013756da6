"""modelslim_v0 configs: translated to the equivalent modelslim_v1 config, or refused naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim.cli.main import main
from modelslim_core import registry
from modelslim_core.errors import AbortedError, ConfigError
from modelslim_core.protocol.config import parse_quant_config
from modelslim_core.protocol.v0_translate import translate_v0


def v0(spec: dict) -> dict:
    return {"apiversion": "modelslim_v0", "spec": spec}


W8A8_STATIC = {"w_bit": 8, "a_bit": 8, "act_method": 1, "disable_names": ["model.layers.1.mlp.down_proj"],
               "dev_type": "npu"}


def test_w8a8_static_calibration_becomes_linear_quant_with_exclude():
    translation = translate_v0(v0({"calib_cfg": W8A8_STATIC, "calib_dataset": "mix_calib.jsonl",
                                   "calib_save_params": {"save_type": ["safe_tensor"], "part_file_size": 0}}), "old.yaml")
    spec = translation.config["spec"]
    assert spec["process"] == [{
        "type": "linear_quant",
        "qconfig": {"act": {"scope": "per_tensor", "dtype": "int8", "symmetric": False, "method": "minmax"},
                    "weight": {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}},
        "include": ["*"],
        "exclude": ["model.layers.1.mlp.down_proj"],
    }]
    assert spec["save"] == [{"type": "ascendv1_saver", "part_file_size": 0}] and spec["dataset"] == "mix_calib.jsonl"
    assert any("dev_type dropped" in note for note in translation.notes)
    parsed = parse_quant_config(translation.config, "t")  # a valid v1 config
    assert parsed.spec.process[0].qconfig.export_type == "W8A8"


@pytest.mark.parametrize(("calib", "export_type"), [
    ({"w_bit": 8, "a_bit": 8, "is_dynamic": True}, "W8A8_DYNAMIC"),
    ({"w_bit": 8, "a_bit": 8, "act_method": 2}, "W8A8"),
    ({"w_bit": 8, "a_bit": 16}, "W8A16"),
    ({"w_bit": 8, "a_bit": 16, "w_sym": False, "group_size": 32, "w_method": "GPTQ"}, "W8A16"),
    ({"w_bit": 4, "a_bit": 8, "is_dynamic": True, "w_method": "SSZ"}, "W4A8_DYNAMIC"),
    ({"w_bit": 4, "a_bit": 16, "group_size": 128, "w_method": "GPTQ"}, "W4A16"),
    ({"w_bit": 4, "a_bit": 8, "is_dynamic": True, "group_size": 64}, "W4A8_DYNAMIC_PER_GROUP"),
])
def test_calibration_settings_translate_to_the_matching_scheme(calib, export_type):
    translation = translate_v0(v0({"calib_cfg": calib}), "old.yaml")
    linear = parse_quant_config(translation.config, "t").spec.process[0]
    assert linear.qconfig.export_type == export_type
    saver = translation.config["spec"]["save"][0]["type"]
    ascend_writes = registry.load(registry.SAVERS, "ascendv1_saver").writes
    assert saver == ("ascendv1_saver" if export_type in ascend_writes else "compressed_tensors_saver")
    assert (saver == "compressed_tensors_saver") == any("compressed_tensors_saver" in n for n in translation.notes)
    if calib.get("group_size") == 32:
        weight = translation.config["spec"]["process"][0]["qconfig"]["weight"]
        assert weight == {"scope": "per_group", "dtype": "int8", "symmetric": False, "method": "gptq",
                          "ext": {"group_size": 32}}
    if calib.get("act_method") == 2:
        assert translation.config["spec"]["process"][0]["qconfig"]["act"]["method"] == "histogram"


# The smoothing processors are built on another branch; where one is not registered in this installation only
# the YAML structure is checked, otherwise the translation must also validate against its config class.
SMOOTHING = {
    "m1": {"type": "smooth_quant", "alpha": 0.5, "symmetric": True},
    "m2": {"type": "iter_smooth", "alpha": 0.5, "symmetric": False, "enable_subgraph_type": ["norm-linear"]},
    "m3": {"type": "awq", "weight_qconfig": {"scope": "per_channel", "dtype": "int8", "symmetric": True,
                                             "method": "minmax"}},
    "m4": {"type": "iter_smooth", "alpha": 0.9, "symmetric": True},
    "m6": {"type": "flex_smooth_quant"},
}


@pytest.mark.parametrize("method", sorted(SMOOTHING))
def test_anti_outlier_methods_become_smoothing_processors(method):
    translation = translate_v0(v0({"anti_cfg": {"anti_method": method}, "calib_cfg": {"w_bit": 8, "a_bit": 8}}),
                               "old.yaml")
    process = translation.config["spec"]["process"]
    assert process[0] == SMOOTHING[method]
    assert process[1]["type"] == "linear_quant"  # smoothing runs first, then quantization
    if SMOOTHING[method]["type"] in registry.names(registry.PROCESSORS):
        parse_quant_config(translation.config, "t")


def test_flex_smooth_keeps_given_alpha_and_beta():
    translation = translate_v0(v0({"anti_cfg": {"anti_method": "m6", "alpha": 0.3, "beta": 0.2},
                                   "calib_cfg": {"w_bit": 8, "a_bit": 8, "is_dynamic": True}}), "old.yaml")
    assert translation.config["spec"]["process"][0] == {"type": "flex_smooth_quant", "alpha": 0.3, "beta": 0.2}


@pytest.mark.parametrize(("spec", "field", "words"), [
    ({"anti_cfg": {"anti_method": "m5"}, "calib_cfg": {}}, "spec.anti_cfg.anti_method", "CBQ"),
    ({"anti_cfg": {"anti_method": "m9"}, "calib_cfg": {}}, "spec.anti_cfg.anti_method", "unknown method"),
    ({"calib_cfg": {"w_bit": 8, "a_bit": 8, "co_sparse": True}}, "spec.calib_cfg.co_sparse", "W8A8S"),
    ({"calib_cfg": {"w_bit": 8, "a_bit": 8, "is_lowbit": True, "fraction": 0.011}}, "spec.calib_cfg.is_lowbit", "low-bit"),
    ({"calib_cfg": {"w_bit": 8, "a_bit": 8, "act_method": 3}}, "spec.calib_cfg.act_method", "automatic mix"),
    ({"calib_cfg": {"w_bit": 8, "a_bit": 8, "mm_tensor": True}}, "spec.calib_cfg.mm_tensor", "per-tensor"),
    ({"calib_cfg": {"w_bit": 8, "a_bit": 8, "pr": 0.5}}, "spec.calib_cfg.pr", "probability"),
    ({"calib_cfg": {"w_bit": 8, "a_bit": 8, "w_method": "HQQ"}}, "spec.calib_cfg.w_method", "HQQ"),
    ({"calib_cfg": {"w_bit": 4, "a_bit": 8, "act_method": 1}}, "spec.calib_cfg.w_bit", "a_bit 8 static"),
    ({"calib_cfg": {"w_bit": 4, "a_bit": 8, "is_dynamic": True, "w_sym": False}}, "spec.calib_cfg.w_bit",
     "no exportable scheme"),
    ({"calib_cfg": {"w_bit": 8, "a_bit": 8}, "calib_params": {"disable_level": "L5"}}, "spec.calib_params.disable_level", "L5"),
    ({"calib_cfg": {"w_bit": 8, "a_bit": 8}, "anti_cfg": {"anti_method": "m1"}, "anti_dataset": "a.jsonl",
      "calib_dataset": "b.jsonl"}, "spec.anti_dataset", "separate anti-outlier dataset"),
    ({"calib_cfg": {"w_bit": 8, "a_bit": 8}, "calib_save_params": {"save_type": ["numpy"]}},
     "spec.calib_save_params.save_type", "numpy"),
    ({"calib_cfg": {"w_bit": 8, "a_bit": 8, "kv_bits": 8}}, "spec.calib_cfg.kv_bits", "not a modelslim_v0 field"),
    ({"anti_cfg": {"anti_method": "m1"}}, "spec.calib_cfg", "required"),
])
def test_untranslatable_fields_are_refused_by_name(spec, field, words):
    with pytest.raises(ConfigError) as caught:
        translate_v0(v0(spec), "old.yaml")
    assert f"old.yaml: {field}" in caught.value.message and words in caught.value.message


def test_convert_config_prints_only_the_yaml(tmp_path, capsys, cli_env):
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(v0({"calib_cfg": W8A8_STATIC, "batch_size": 4})))
    assert main(["convert-config", str(old)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Translated from modelslim_v0")
    assert yaml.safe_load(out)["apiversion"] == "modelslim_v1"
    assert "# spec.batch_size dropped" in out

    v1 = tmp_path / "new.yaml"
    v1.write_text(out)
    assert main(["convert-config", str(v1)]) == 1
    assert "convert-config translates modelslim_v0 configs" in capsys.readouterr().err
    old.write_text(yaml.safe_dump(v0({"calib_cfg": {"w_bit": 8, "co_sparse": True}})))
    assert main(["convert-config", str(old)]) == 1
    assert "spec.calib_cfg.co_sparse" in capsys.readouterr().err


def test_quant_runs_a_v0_config_after_confirmation(tiny_models, small_calib, tmp_path, capsys, cli_env):
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump(v0({"calib_cfg": {"w_bit": 8, "a_bit": 8, "is_dynamic": True,
                                                    "disable_names": ["model.layers.0.mlp.down_proj"]},
                                      "calib_dataset": str(small_calib),
                                      "calib_save_params": {"save_type": ["safe_tensor"], "part_file_size": 0}})))
    model, out = tiny_models("qwen2"), tmp_path / "out"
    with pytest.raises(AbortedError, match="modelslim_v0"):  # no terminal, no --yes: nothing is run or written
        run_quant(QuantArgs(str(model), str(out), "Qwen2-demo", config_path=str(old), device="cpu"))
    assert not out.exists()
    assert "apiversion: modelslim_v1" in capsys.readouterr().out  # the translation was shown first

    run_quant(QuantArgs(str(model), str(out), "Qwen2-demo", config_path=str(old), device="cpu", yes=True))
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["model.layers.0.mlp.down_proj.weight"] == "FLOAT"
    assert description["model.layers.1.mlp.down_proj.weight"] == "W8A8_DYNAMIC"
    assert yaml.safe_load((out / "Qwen2-demo_best_practice.yaml").read_text())["apiversion"] == "modelslim_v1"
