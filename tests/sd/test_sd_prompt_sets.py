"""`spec.dataset` of multimodal_sd_modelslim_v1: the shipped prompt sets by name, a path, and the messages of
a wrong name, a conflict with inference_config.prompt, mixed images, and the reference's LLM default."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from modelslim_core.errors import ConfigError, DatasetError
from modelslim_core.protocol.config import parse_quant_config
from modelslim_sd.families.wan2_2 import Wan22I2VAdapter, Wan22TI2VAdapter
from modelslim_sd.prompt_sets import shipped_prompt_sets, with_prompt_set
from tests.sd.tiny_families import TINY_WAN22, make_wan22
from tests.tiny_models import REPO

SHIPPED = ["hunyuanvideo", "wan2_2_i2v", "wan2_2_t2v", "wan2_2_ti2v"]
WHERE = "spec.dataset"
INFERENCE = "spec.multimodal_sd_config.inference_config"


def parse(dataset: str, practice: str = "wan2_2/wan2_2-i2v-w8a8f8.yaml", **inference):
    config = yaml.safe_load((REPO / "practices" / practice).read_text())
    config["spec"]["dataset"] = dataset
    config["spec"]["multimodal_sd_config"]["inference_config"].update(inference)
    return parse_quant_config(config, "sd.yaml").spec


def write_index(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_prompt_set_loads_by_name(name):
    assert sorted(shipped_prompt_sets()) == SHIPPED
    prompt_set = parse(name).prompt_set
    assert prompt_set.path == REPO / "calib" / "sd_prompts" / name / "index.jsonl"
    assert len(prompt_set.prompts) >= 4 and all(p.strip() for p in prompt_set.prompts)
    if name == "wan2_2_i2v":  # image-to-video: every prompt has its first frame, an existing file
        assert all(image and Path(image).is_file() for image in prompt_set.images)
    else:
        assert not any(prompt_set.images)


def test_a_wrong_name_says_the_field_and_the_available_names():
    with pytest.raises(ConfigError) as info:
        parse("wan2_2_t2x")
    assert info.value.message == ("sd.yaml: spec.dataset 'wan2_2_t2x' is not a prompt set ModelSlim ships (did you "
                                  "mean 'wan2_2_t2v'?), nor an existing path.")
    assert info.value.hint.startswith("use a prompt set ModelSlim ships (hunyuanvideo, wan2_2_i2v, wan2_2_t2v, "
                                      "wan2_2_ti2v), or a path to a .jsonl file")


def test_a_path_to_a_file_or_a_directory_is_read_with_images_relative_to_it(tmp_path):
    image = REPO / "calib" / "vlm_calib" / "scene_1.png"
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "first.png").write_bytes(image.read_bytes())
    index = write_index(tmp_path / "set" / "index.jsonl", [{"text": "a ball rolls", "image": "../frames/first.png"},
                                                           {"prompt": "a bar slides", "image": str(image)}])
    for value in (str(index), str(index.parent)):
        prompt_set = parse(value).prompt_set
        assert prompt_set.prompts == ("a ball rolls", "a bar slides")
        assert prompt_set.images == (str((tmp_path / "frames" / "first.png").resolve()), str(image))


@pytest.mark.parametrize("rows, fragment", [
    ([{"text": "ok"}, {"text": ""}], "line 2 has no prompt"),
    ([{"text": "ok", "image": "missing.png"}], "line 1: image 'missing.png' is not a file"),
    ([], "holds no prompts"),
])
def test_a_bad_prompt_file_names_the_line(tmp_path, rows, fragment):
    index = write_index(tmp_path / "set.jsonl", rows)
    with pytest.raises(DatasetError, match=fragment):
        parse(str(index))


def test_the_reference_default_text_set_is_accepted_with_a_warning_and_not_used(caplog):
    with caplog.at_level(logging.WARNING, logger="modelslim_sd"):
        spec = parse("mix_calib.jsonl")
    assert spec.prompt_set is None
    assert "spec.dataset 'mix_calib.jsonl' is a text set for language models" in caplog.text


@pytest.fixture(scope="module")
def i2v(tmp_path_factory) -> Path:
    return make_wan22(tmp_path_factory.mktemp("wan22") / "i2v", "i2v")


def tiny_settings(task: str, **extra) -> dict:
    return {**{k: v for k, v in TINY_WAN22.items() if k != "prompt"}, "task": task, **extra}


def test_the_prompt_set_gives_each_i2v_generation_its_prompt_and_first_frame(i2v):
    adapter = Wan22I2VAdapter("Wan2.2-I2V-A14B", i2v)
    prompt_set = parse("wan2_2_i2v").prompt_set
    raw = with_prompt_set(adapter.inference_config_class, tiny_settings("i2v-A14B"), INFERENCE, prompt_set, WHERE)
    calls = adapter.generation_calls(adapter.parse_inference_config(raw, INFERENCE))
    assert [call["prompt"] for call in calls] == list(prompt_set.prompts)
    for call, path in zip(calls, prompt_set.images, strict=True):  # each generation starts from its own frame
        assert call["image"].tobytes() == Image.open(path).convert("RGB").tobytes()


@pytest.mark.parametrize("raw, rows, fragment", [
    (tiny_settings("i2v-A14B", prompt="mine"), [{"text": "a"}], "spec.dataset and " + INFERENCE + ".prompt both give"),
    (tiny_settings("i2v-A14B"), [{"text": "a", "image": str(REPO / "calib/vlm_calib/scene_1.png")}, {"text": "b"}],
     "gives an image for some prompts but not for others"),
])
def test_conflicting_prompt_sources_are_refused(i2v, tmp_path, raw, rows, fragment):
    prompt_set = parse(str(write_index(tmp_path / "set.jsonl", rows))).prompt_set
    with pytest.raises(ConfigError, match=fragment):
        with_prompt_set(Wan22I2VAdapter.inference_config_class, raw, INFERENCE, prompt_set, WHERE)


@pytest.mark.slow
def test_ti2v_calibration_runs_one_generation_per_prompt_of_the_set(tmp_path):
    model = make_wan22(tmp_path / "ti2v", "ti2v")
    adapter = Wan22TI2VAdapter("Wan2.2-TI2V-5B", model)
    index = write_index(tmp_path / "set.jsonl", [{"text": "a kite in the sky"}, {"text": "rain on a window"}])
    raw = with_prompt_set(adapter.inference_config_class, tiny_settings("ti2v-5B"), INFERENCE,
                          parse(str(index)).prompt_set, WHERE)
    records = adapter.capture_calibration(adapter.parse_inference_config(raw, INFERENCE), torch.device("cpu"),
                                          torch.float32)
    assert len(records["transformer"]) == 2 * TINY_WAN22["sample_steps"] * 2  # prompts x steps x (cond, uncond)
