"""Bad multimodal_sd input through `msmodelslim quant`: one clear paragraph naming the field or path, exit 1, no
traceback, nothing written to save_path and nothing under model_path changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli._helpers import assert_clean_failure, run_inprocess, tree_digest
from tests.sd._helpers import DYNAMIC_PRACTICE, MODEL_TYPE, STATIC_PRACTICE, practice_config, write_config

pytestmark = pytest.mark.usefixtures("cli_env")

W8A16 = {"type": "linear_quant", "qconfig": {"weight": {"scope": "per_channel", "dtype": "int8", "symmetric": True,
                                                        "method": "minmax"}}}


@pytest.fixture
def guard(tiny_wan: Path):
    before = tree_digest(tiny_wan)
    yield
    assert tree_digest(tiny_wan) == before, "the model directory was modified"


def run_config(config: dict, model: Path, tmp_path: Path, capsys, model_type: str = MODEL_TYPE):
    path = write_config(tmp_path / "config.yaml", config)
    save = tmp_path / "out"
    result = run_inprocess(["--model_path", str(model), "--save_path", str(save), "--model_type", model_type,
                            "--config_path", str(path), "--device", "cpu"], capsys)
    return result, save


def with_model_config(practice: Path, **changes) -> dict:
    config = practice_config(practice)
    config["spec"]["multimodal_sd_config"]["model_config"].update(changes)
    return config


def test_directory_without_model_index_json(tiny_models, tmp_path, capsys):
    llm = tiny_models("qwen2")
    result, save = run_config(practice_config(DYNAMIC_PRACTICE), llm, tmp_path, capsys)
    assert_clean_failure(result, 1, "model error", "model_index.json", "diffusers")
    assert not save.exists()


def test_unknown_model_config_key_lists_the_valid_fields(tiny_wan, guard, tmp_path, capsys):
    result, save = run_config(with_model_config(STATIC_PRACTICE, sample_shift=5.0), tiny_wan, tmp_path, capsys)
    assert_clean_failure(result, 1, "spec.multimodal_sd_config.model_config.sample_shift: unknown field",
                         "frame_num (integer 4n+1 >= 1", "size ('W*H', multiples of 16", "task (t2v-14B | t2v-1.3B)")
    assert not save.exists()


@pytest.mark.parametrize("size, needle", [("1280x720", "size must be 'W*H'"), ("40*40", "multiples of 16")])
def test_size_must_be_w_times_h(tiny_wan, guard, tmp_path, capsys, size, needle):
    result, save = run_config(with_model_config(STATIC_PRACTICE, size=size), tiny_wan, tmp_path, capsys)
    assert_clean_failure(result, 1, "model_config.size", needle)
    assert not save.exists()


def test_model_config_and_inference_config_together(tiny_wan, guard, tmp_path, capsys):
    config = practice_config(STATIC_PRACTICE, inference_config={"frame_num": 5})
    result, save = run_config(config, tiny_wan, tmp_path, capsys)
    assert_clean_failure(result, 1, "spec.multimodal_sd_config", "model_config and inference_config", "both")
    assert not save.exists()


def test_inference_config_is_an_alias_of_model_config(tiny_wan, guard, tmp_path, capsys):
    config = practice_config(DYNAMIC_PRACTICE)
    sd = config["spec"]["multimodal_sd_config"]
    sd["inference_config"] = {**sd.pop("model_config"), "frame_num": 6}
    result, _ = run_config(config, tiny_wan, tmp_path, capsys)
    assert_clean_failure(result, 1, "spec.multimodal_sd_config.inference_config.frame_num", "4n+1")


def test_static_config_with_enable_dump_false_fails_before_any_work(tiny_wan, guard, tmp_path, capsys):
    config = practice_config(STATIC_PRACTICE, dump_config={"enable_dump": False})
    result, save = run_config(config, tiny_wan, tmp_path, capsys)
    assert_clean_failure(result, 1, "enable_dump is false", "needs calibration data", "per_token")
    assert not save.exists()


def test_dynamic_config_with_enable_dump_false_runs_without_data(tiny_wan, guard, tmp_path, capsys):
    config = practice_config(DYNAMIC_PRACTICE, dump_config={"enable_dump": False})
    result, save = run_config(config, tiny_wan, tmp_path, capsys)
    assert result.code == 0, result.stderr
    assert (save / "quant_model_description_w8a8_dynamic.json").is_file()
    assert not list(save.glob("*.pth"))


def test_mindie_saver_refuses_w8a16_at_load_time(tiny_wan, guard, tmp_path, capsys):
    config = practice_config(DYNAMIC_PRACTICE)
    config["spec"]["process"] = [W8A16]
    result, save = run_config(config, tiny_wan, tmp_path, capsys)
    assert_clean_failure(result, 1, "spec.save[0].type", "mindie_format_saver cannot write W8A16",
                         "spec.process[0]", "ascendv1_saver")
    assert not save.exists()


def test_dump_dir_inside_the_model_is_refused(tiny_wan, guard, tmp_path, capsys):
    config = practice_config(STATIC_PRACTICE, dump_config={"dump_data_dir": str(tiny_wan / "calib")})
    result, save = run_config(config, tiny_wan, tmp_path, capsys)
    assert_clean_failure(result, 1, "dump_data_dir", "model directory")
    assert not save.exists()


def test_prior_is_refused(tiny_wan, guard, tmp_path, capsys):
    config = practice_config(DYNAMIC_PRACTICE)
    config["spec"]["prior"] = [{"process": []}]
    result, save = run_config(config, tiny_wan, tmp_path, capsys)
    assert_clean_failure(result, 1, "spec.prior", "model_config")
    assert not save.exists()


def test_wan_under_the_llm_apiversion_names_the_sd_service(tiny_wan, guard, tmp_path, capsys):
    config = practice_config(DYNAMIC_PRACTICE)
    config["apiversion"] = "modelslim_v1"
    del config["spec"]["multimodal_sd_config"]
    result, save = run_config(config, tiny_wan, tmp_path, capsys)
    assert_clean_failure(result, 1, "modelslim_v1 cannot quantize model type 'Wan2.1'", "multimodal_sd_modelslim_v1")
    assert not save.exists()


def test_llm_under_the_sd_apiversion_names_modelslim_v1(tiny_models, tmp_path, capsys):
    result, save = run_config(practice_config(DYNAMIC_PRACTICE), tiny_models("qwen2"), tmp_path, capsys,
                              model_type="Qwen2-demo")
    assert_clean_failure(result, 1, "multimodal_sd_modelslim_v1 cannot quantize", "use apiversion modelslim_v1")
    assert not save.exists()


def test_other_runner_is_replaced_by_layer_wise_with_a_warning(tiny_wan, guard, tmp_path, capsys):
    config = practice_config(DYNAMIC_PRACTICE)
    config["spec"]["runner"] = "model_wise"
    result, save = run_config(config, tiny_wan, tmp_path, capsys)
    assert result.code == 0, result.stderr
    assert "runner model_wise is not supported by multimodal_sd_modelslim_v1; using layer_wise" in result.stderr
