"""Bad input to `msmodelslim quant`: one clear paragraph on stderr, the right exit code, no traceback, and
nothing written (the model directory is never modified).

Exit codes: 2 for usage errors, 1 for every other failure. Most cases run in-process through `main()`;
the ones whose point is the real process (argparse, environment, exit status) run in a subprocess.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from modelslim.cli.parser import parse_bool
from tests.cli._helpers import (
    CliResult,
    assert_clean_failure,
    run_inprocess,
    run_subprocess,
    tree_digest,
)

pytestmark = pytest.mark.usefixtures("cli_env")

DYNAMIC_W8A8 = """\
apiversion: modelslim_v1
spec:
  process:
    - type: linear_quant
      qconfig:
        act: {scope: per_token, dtype: int8, symmetric: true, method: minmax}
        weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}
  save:
    - type: ascendv1_saver
"""

STATIC_W8A8 = """\
apiversion: modelslim_v1
spec:
  process:
    - type: linear_quant
      qconfig:
        act: {{scope: per_tensor, dtype: int8, symmetric: false, method: minmax}}
        weight: {{scope: per_channel, dtype: int8, symmetric: true, method: minmax}}
  save:
    - type: ascendv1_saver
  dataset: {dataset}
"""


@pytest.fixture
def model(tiny_models) -> Path:
    return tiny_models("qwen2")


@pytest.fixture
def guard(model: Path):
    """Asserts after the test that not a byte under the model directory changed."""
    before = tree_digest(model)
    yield
    assert tree_digest(model) == before, "the model directory was modified"


def quant_args(model: Path, save: Path, *extra: str, model_type: str = "Qwen2-demo") -> list[str]:
    return ["--model_path", str(model), "--save_path", str(save), "--model_type", model_type, *extra]


def run_config(
    text: str, model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[CliResult, Path, Path]:
    """Write `text` as a YAML config and run it; returns (result, config path, save path)."""
    config = tmp_path / "config.yaml"
    config.write_text(text, encoding="utf-8")
    save = tmp_path / "out"
    result = run_inprocess(quant_args(model, save, "--config_path", str(config), "--device", "cpu", *extra), capsys)
    return result, config, save


# --- model_path / save_path -------------------------------------------------------------------------------


def test_missing_model_dir_is_a_model_error_in_a_real_process(tmp_path: Path):
    missing = tmp_path / "no-such-model"
    save = tmp_path / "out"
    result = run_subprocess(quant_args(missing, save, "--quant_type", "w8a8"), cwd=tmp_path)
    assert_clean_failure(result, 1, "model error", "model_path", str(missing), "does not exist")
    assert not save.exists()


def test_empty_model_dir_is_a_model_error(tmp_path: Path, capsys):
    empty = tmp_path / "empty-model"
    empty.mkdir()
    save = tmp_path / "out"
    result = run_inprocess(quant_args(empty, save, "--quant_type", "w8a8"), capsys)
    assert_clean_failure(result, 1, "model_path", str(empty), "empty")
    assert not save.exists()
    assert list(empty.iterdir()) == []


def test_model_dir_without_config_json_is_a_model_error(tmp_path: Path, capsys):
    model = tmp_path / "weights-only"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"not really weights")
    before = tree_digest(model)
    save = tmp_path / "out"
    result = run_inprocess(quant_args(model, save, "--quant_type", "w8a8"), capsys)
    assert_clean_failure(result, 1, "model_path", str(model), "config.json")
    assert not save.exists()
    assert tree_digest(model) == before


def test_save_path_equal_to_model_path_is_a_usage_error(model: Path, guard, capsys):
    result = run_inprocess(quant_args(model, model, "--quant_type", "w8a16", "--device", "cpu"), capsys)
    assert_clean_failure(result, 2, "usage error", "save_path", str(model), "--model_path")


def test_save_path_inside_model_path_is_a_usage_error(model: Path, guard, capsys):
    inside = model / "quantized"
    result = run_inprocess(quant_args(model, inside, "--quant_type", "w8a16", "--device", "cpu"), capsys)
    assert_clean_failure(result, 2, "usage error", "save_path", str(inside), "inside")
    assert not inside.exists()


def test_save_path_symlink_to_model_path_is_a_usage_error(model: Path, guard, tmp_path: Path, capsys):
    link = tmp_path / "link-to-model"
    link.symlink_to(model, target_is_directory=True)
    result = run_inprocess(quant_args(model, link, "--quant_type", "w8a16", "--device", "cpu"), capsys)
    assert_clean_failure(result, 2, "usage error", "save_path", str(link))


def test_save_path_that_is_a_file_is_a_usage_error(model: Path, guard, tmp_path: Path, capsys):
    save = tmp_path / "out"
    save.write_text("keep me")
    result = run_inprocess(quant_args(model, save, "--quant_type", "w8a16", "--device", "cpu"), capsys)
    assert_clean_failure(result, 2, "usage error", "save_path", str(save), "not a directory")
    assert save.read_text() == "keep me"


# --- argparse-level errors (cheap subprocesses: they fail before torch is imported) ---------------------------


def test_config_path_together_with_quant_type_is_a_usage_error(model: Path, tmp_path: Path):
    config = tmp_path / "config.yaml"
    config.write_text(DYNAMIC_W8A8)
    save = tmp_path / "out"
    result = run_subprocess(quant_args(model, save, "--config_path", str(config), "--quant_type", "w8a8"), cwd=tmp_path)
    assert_clean_failure(result, 2, "--quant_type", "--config_path")
    assert not save.exists()


def test_unknown_quant_type_is_a_usage_error_listing_the_valid_ones(model: Path, tmp_path: Path):
    save = tmp_path / "out"
    result = run_subprocess(quant_args(model, save, "--quant_type", "w3a7"), cwd=tmp_path)
    assert_clean_failure(result, 2, "--quant_type", "'w3a7'", "w8a8", "w8a16", "w4a8")
    assert not save.exists()


def test_bad_trust_remote_code_value_is_a_usage_error(model: Path, tmp_path: Path):
    save = tmp_path / "out"
    args = quant_args(model, save, "--quant_type", "w8a8", "--trust_remote_code", "maybe")
    result = run_subprocess(args, cwd=tmp_path)
    assert_clean_failure(result, 2, "--trust_remote_code", "'maybe'")
    assert not save.exists()


def test_empty_model_type_is_a_usage_error(model: Path, tmp_path: Path):
    save = tmp_path / "out"
    result = run_subprocess(["--model_path", str(model), "--save_path", str(save), "--model_type", " ",
                             "--quant_type", "w8a16"], cwd=tmp_path)
    assert_clean_failure(result, 2, "--model_type", "must not be empty")
    assert not save.exists()


@pytest.mark.parametrize(("text", "expected"), [("True", True), ("false", False), ("TRUE", True), (" False ", False)])
def test_parse_bool_accepts_true_and_false_in_any_case(text: str, expected: bool):
    assert parse_bool(text) is expected


@pytest.mark.parametrize("text", ["maybe", "", "tru", "2"])
def test_parse_bool_rejects_other_words(text: str):
    with pytest.raises(argparse.ArgumentTypeError, match="expected true or false"):
        parse_bool(text)


def test_bogus_log_level_env_is_a_usage_error(model: Path, tmp_path: Path):
    save = tmp_path / "out"
    result = run_subprocess(quant_args(model, save, "--quant_type", "w8a8"), cwd=tmp_path,
                            env_extra={"MSMODELSLIM_LOG_LEVEL": "bogus"})
    assert_clean_failure(result, 2, "MSMODELSLIM_LOG_LEVEL", "'bogus'", "DEBUG")
    assert not save.exists()


# --- devices --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["gpu", "npu:abc", "npu:,", "cpu:0,0", ""])
def test_malformed_device_is_a_usage_error(device: str, model: Path, guard, tmp_path: Path, capsys):
    save = tmp_path / "out"
    result = run_inprocess(quant_args(model, save, "--quant_type", "w8a16", "--device", device), capsys)
    assert_clean_failure(result, 2, "usage error", "--device")
    assert not save.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_cuda_is_a_device_error(model: Path, guard, tmp_path: Path, capsys):
    save = tmp_path / "out"
    result = run_inprocess(quant_args(model, save, "--quant_type", "w8a16", "--device", "cuda"), capsys)
    assert_clean_failure(result, 1, "device error", "--device cuda", "CUDA", "--device cpu")
    assert not save.exists()


# --- YAML configs -----------------------------------------------------------------------------------------------


def test_missing_config_file_is_a_config_error_naming_it(model: Path, guard, tmp_path: Path, capsys):
    missing = tmp_path / "nope.yaml"
    save = tmp_path / "out"
    result = run_inprocess(quant_args(model, save, "--config_path", str(missing), "--device", "cpu"), capsys)
    assert_clean_failure(result, 1, "config error", str(missing), "does not exist")
    assert not save.exists()


def test_unknown_processor_type_names_the_item_and_lists_known_types(model: Path, guard, tmp_path: Path, capsys):
    text = DYNAMIC_W8A8.replace("type: linear_quant", "type: linear_quantize")
    result, config, save = run_config(text, model, tmp_path, capsys)
    assert_clean_failure(result, 1, "config error", str(config), "spec.process[0].type", "'linear_quantize'",
                         "linear_quant", "group")
    assert not save.exists()


def test_wrong_field_type_names_the_yaml_path(model: Path, guard, tmp_path: Path, capsys):
    text = DYNAMIC_W8A8 + '      part_file_size: "big"\n'
    result, _, save = run_config(text, model, tmp_path, capsys)
    assert_clean_failure(result, 1, "config error", "spec.save[0].part_file_size", "'big'")
    assert not save.exists()


def test_boolean_for_a_number_field_is_rejected(model: Path, guard, tmp_path: Path, capsys):
    text = DYNAMIC_W8A8 + "      part_file_size: yes\n"  # YAML 1.1: `yes` is a boolean
    result, _, save = run_config(text, model, tmp_path, capsys)
    assert_clean_failure(result, 1, "config error", "spec.save[0].part_file_size")
    assert not save.exists()


def test_invalid_enum_names_the_yaml_path_and_the_allowed_values(model: Path, guard, tmp_path: Path, capsys):
    text = DYNAMIC_W8A8.replace("act: {scope: per_token", "act: {scope: per_tokn")
    result, _, save = run_config(text, model, tmp_path, capsys)
    assert_clean_failure(result, 1, "config error", "spec.process[0].qconfig.act.scope", "'per_tokn'",
                         "per_token", "per_tensor", "per_channel")
    assert not save.exists()


def test_unexportable_pair_is_rejected_when_the_config_is_loaded(model: Path, guard, tmp_path: Path, capsys):
    text = DYNAMIC_W8A8.replace("act: {scope: per_token, dtype: int8, symmetric: true",
                                "act: {scope: per_token, dtype: int8, symmetric: false")
    result, _, save = run_config(text, model, tmp_path, capsys)
    assert_clean_failure(result, 1, "config error", "spec.process[0].qconfig", "int8/per_token/asym")
    assert not save.exists()  # refused before anything is written or loaded
    assert "Model loaded" not in result.stderr


def test_unknown_apiversion_lists_the_known_ones(model: Path, guard, tmp_path: Path, capsys):
    result, _, save = run_config(DYNAMIC_W8A8.replace("modelslim_v1", "modelslim_v9"), model, tmp_path, capsys)
    assert_clean_failure(result, 1, "config error", "apiversion", "'modelslim_v9'", "modelslim_v1")
    assert not save.exists()


def test_apiversion_v0_with_v1_fields_names_the_field_and_the_fix(model: Path, guard, tmp_path: Path, capsys):
    # a v1 body labelled v0 cannot be translated: the first unknown v0 field is named, with the way out
    result, _, save = run_config(DYNAMIC_W8A8.replace("modelslim_v1", "modelslim_v0"), model, tmp_path, capsys)
    assert_clean_failure(result, 1, "config error", "spec.process", "modelslim_v0", "apiversion: modelslim_v1")
    assert not save.exists()


def test_malformed_yaml_names_the_line(model: Path, guard, tmp_path: Path, capsys):
    text = DYNAMIC_W8A8.replace("spec:\n", "spec:\n  runner: auto: model_wise\n")  # line 3
    result, config, save = run_config(text, model, tmp_path, capsys)
    assert_clean_failure(result, 1, "config error", str(config), "not valid YAML", "line 3")
    assert not save.exists()


def test_duplicate_yaml_key_names_the_key_and_the_line(model: Path, guard, tmp_path: Path, capsys):
    text = DYNAMIC_W8A8.replace("spec:\n", "spec:\n  runner: auto\n  runner: model_wise\n")
    result, config, save = run_config(text, model, tmp_path, capsys)
    assert_clean_failure(result, 1, "config error", "duplicate key 'runner'", "line 4", str(config))
    assert not save.exists()


def test_yaml_anchors_and_aliases_work(model: Path, guard, tmp_path: Path, capsys):
    text = """\
apiversion: modelslim_v1
w8a8_dynamic: &dyn
  act: {scope: per_token, dtype: int8, symmetric: true, method: minmax}
  weight: &w {scope: per_channel, dtype: int8, symmetric: true, method: minmax}
spec:
  process:
    - type: linear_quant
      qconfig: *dyn
      include: ["*mlp*"]
    - type: linear_quant
      qconfig: {weight: *w}
  save:
    - type: ascendv1_saver
"""
    result, _, save = run_config(text, model, tmp_path, capsys)
    assert result.code == 0, result.stderr
    description = json.loads((save / "quant_model_description.json").read_text())
    assert description["model.layers.0.mlp.down_proj.weight"] == "W8A8_DYNAMIC"
    assert description["model.layers.0.self_attn.q_proj.weight"] == "W8A16"
    exported = (save / "Qwen2-demo_best_practice.yaml").read_text()
    assert "&" not in exported and "*dyn" not in exported  # aliases expanded in the exported config


# --- calibration data -----------------------------------------------------------------------------------------


def test_missing_dataset_file_is_a_dataset_error_naming_it(model: Path, guard, tmp_path: Path, capsys):
    missing = tmp_path / "missing.jsonl"
    result, _, save = run_config(STATIC_W8A8.format(dataset=missing), model, tmp_path, capsys)
    assert_clean_failure(result, 1, "dataset error", str(missing))
    assert not (save / "quant_model_description.json").exists()


def test_empty_dataset_file_is_a_dataset_error(model: Path, guard, tmp_path: Path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    result, _, save = run_config(STATIC_W8A8.format(dataset=empty), model, tmp_path, capsys)
    assert_clean_failure(result, 1, "dataset error", str(empty), "no samples")
    assert not (save / "quant_model_description.json").exists()


def test_jsonl_with_a_bad_line_names_the_line_number(model: Path, guard, tmp_path: Path, capsys, small_calib: Path):
    lines = small_calib.read_text().splitlines()
    lines.insert(2, '{"inputs_pretokenized": "unterminated')
    small_calib.write_text("\n".join(lines) + "\n")
    result, _, save = run_config(STATIC_W8A8.format(dataset=small_calib), model, tmp_path, capsys)
    assert_clean_failure(result, 1, "dataset error", str(small_calib), "line 3", "not valid JSON")
    assert not (save / "quant_model_description.json").exists()


# --- tracebacks ---------------------------------------------------------------------------------------------------


def test_debug_log_level_shows_the_traceback_of_a_failure(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setenv("MSMODELSLIM_LOG_LEVEL", "debug")
    missing = tmp_path / "no-such-model"
    result = run_inprocess(quant_args(missing, tmp_path / "out", "--quant_type", "w8a8"), capsys)
    assert result.code == 1
    assert "msmodelslim: model error: model_path" in result.stderr
    assert "Traceback (most recent call last)" in result.stderr
    assert "ModelError" in result.stderr
