"""Qwen-Image-Edit-2509 calibration on a complete tiny QwenImageEditPlusPipeline: the `edit` task edits each
prompt set line's image with its prompt, so the recorded transformer calls carry the image latents next to the
noise latents; the cache is reused by an identical run and captured again when a prompt or an image (its
content, not only its path) changes; a static config's output loads in MindIE-SD's own quantize()."""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.errors import ConfigError
from modelslim_sd.calib_file import read_calib_file
from modelslim_sd.families.qwen_image_edit import QwenImageEditAdapter
from modelslim_sd.prompt_sets import load_prompt_set, with_prompt_set
from tests.sd._helpers import write_config
from tests.sd.test_generation_calibration import static_config
from tests.sd.tiny_families import TINY_QWEN_IMAGE_EDIT, make_qwen_image_edit_pipeline, tiny_qwen_image_edit_areas
from tests.tiny_models import REPO

pytestmark = pytest.mark.usefixtures("cli_env")

IMAGES = REPO / "calib" / "vlm_calib"
MODEL_TYPE = "Qwen-Image-Edit-2509"
CALIB = "calib_data_edit_transformer.pth"
#: 16 noise tokens (64x64 pixels) and 16 tokens of the edited image (its area shrunk to 64x64 by the fixture)
IMAGE_TOKENS = 16


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    return make_qwen_image_edit_pipeline(tmp_path_factory.mktemp("qwen_image_edit") / "pipe")


@pytest.fixture
def small_areas(monkeypatch):
    tiny_qwen_image_edit_areas(monkeypatch)


def prompt_set(folder: Path, lines: list[tuple[str, str]]) -> Path:
    """An index.jsonl pairing each prompt with a copy of a repository image (paths relative to the file)."""
    folder.mkdir(parents=True, exist_ok=True)
    for _, image in lines:
        if not (folder / image).exists():
            shutil.copyfile(IMAGES / image, folder / image)
    index = folder / "index.jsonl"
    index.write_text("".join(json.dumps({"text": text, "image": image}) + "\n" for text, image in lines),
                     encoding="utf-8")
    return index


def settings(raw: dict, dataset: Path | None = None):
    from modelslim_sd.families.qwen_image_edit import QwenImageEditSettings

    sample = load_prompt_set(str(dataset), "spec.dataset") if dataset else None
    merged = with_prompt_set(QwenImageEditSettings, raw, "inference_config", sample, "spec.dataset")
    return QwenImageEditSettings(**merged)


def test_prompt_set_pairs_each_prompt_with_its_image(tmp_path):
    """A prompt set's images are per prompt (prompt_images), not img_paths (images edited together with every
    prompt by the Plus pipeline); giving both is refused."""
    index = prompt_set(tmp_path / "set", [("make the sky red", "scene_0.jpg"), ("add snow", "scene_1.png")])
    config = settings(dict(TINY_QWEN_IMAGE_EDIT), index)
    assert config.prompts == ["make the sky red", "add snow"]
    assert [Path(config.images_for(i)[0]).name for i in range(2)] == ["scene_0.jpg", "scene_1.png"]
    assert config.img_paths is None
    with pytest.raises(ConfigError, match="inference_config.prompt_images is set too"):
        settings({**TINY_QWEN_IMAGE_EDIT, "prompt_images": [str(IMAGES / "scene_0.jpg")] * 2}, index)
    with pytest.raises(ValueError, match="img_paths and prompt_images"):
        settings({**TINY_QWEN_IMAGE_EDIT, "img_paths": str(IMAGES / "scene_2.jpg")}, index)
    with pytest.raises(ValueError, match="2 paths for 1 prompts"):
        settings({**TINY_QWEN_IMAGE_EDIT, "prompt": "x", "prompt_images": [str(IMAGES / "scene_0.jpg")] * 2})


@pytest.mark.slow
def test_edit_capture_records_image_conditioned_calls(pipeline, small_areas):
    adapter = QwenImageEditAdapter(MODEL_TYPE, pipeline)
    config = adapter.parse_inference_config(
        {**TINY_QWEN_IMAGE_EDIT, "prompt": "make the sky red", "img_paths": [str(IMAGES / "scene_0.jpg")]},
        "inference_config")
    records = adapter.capture_calibration(config, torch.device("cpu"), torch.float32)
    (calls,) = records.values()
    assert len(calls) == 2 * 2  # steps x (prompt, negative prompt): true CFG
    kwargs = calls[0].kwargs
    assert kwargs["hidden_states"].shape == (1, 2 * IMAGE_TOKENS, 64)  # noise tokens, then the image's
    assert kwargs["img_shapes"] == [[(1, 4, 4), (1, 4, 4)]]
    assert kwargs["encoder_hidden_states"].shape[-1] == 32  # the Qwen2.5-VL text encoder's width
    assert adapter.calibration_file_name(config, adapter.denoisers()[0]) == CALIB


def edit_config(dump: Path, dataset: Path) -> dict:
    """test_generation_calibration's static int8 config on the transformer blocks' attention linears, with the
    prompt set and the tiny edit settings."""
    config = static_config(dump)
    config["spec"]["process"][0]["include"] = ["transformer_blocks.*.attn.to_*"]
    config["spec"]["dataset"] = str(dataset)
    config["spec"]["multimodal_sd_config"]["inference_config"] = dict(TINY_QWEN_IMAGE_EDIT)
    return config


@pytest.mark.slow
def test_edit_calibration_cache_and_mindie_sd_load(pipeline, small_areas, tmp_path, monkeypatch, caplog):
    dump = tmp_path / "dump"
    calib = dump / CALIB

    def run(name: str, lines: list[tuple[str, str]]) -> Path:
        index = prompt_set(tmp_path / "set", lines)
        path = write_config(tmp_path / f"{name}.yaml", edit_config(dump, index))
        return run_quant(QuantArgs(str(pipeline), str(tmp_path / name), MODEL_TYPE, config_path=str(path),
                                   device="cpu"))

    lines = [("make the sky red", "scene_0.jpg"), ("add snow", "scene_2.jpg")]
    out = run("first", lines)
    first = read_calib_file(calib)
    assert len(first.records) == 2 * 2 * 2  # prompts x steps x true CFG
    assert all(r.kwargs["hidden_states"].shape[1] == 2 * IMAGE_TOKENS for r in first.records)
    description = json.loads(next(out.glob("quant_model_description_*.json")).read_text())
    assert description["transformer_blocks.1.attn.to_q.weight"] == "W8A8"
    if importlib.util.find_spec("mindiesd") is not None:
        from modelslim.engines.conformance import check_saved

        assert [str(problem) for problem in check_saved(out)] == []

    with monkeypatch.context() as patch:
        patch.setattr(QwenImageEditAdapter, "capture_calibration",
                      lambda *a, **k: pytest.fail("captured again although the cached calibration matches"))
        run("second", lines)

    # the same path, other content: the edited image changed, so the cache is stale
    shutil.copyfile(IMAGES / "scene_1.png", tmp_path / "set" / "scene_2.jpg")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="modelslim_sd"):
        run("third", lines)
    assert "Capturing calibration data" in caplog.text and "image_digests" in caplog.text
    third = read_calib_file(calib)
    assert torch.equal(third.records[0].kwargs["hidden_states"], first.records[0].kwargs["hidden_states"])
    assert not torch.equal(third.records[4].kwargs["hidden_states"], first.records[4].kwargs["hidden_states"])

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="modelslim_sd"):
        run("fourth", [("turn it into a painting", "scene_0.jpg")])
    assert "prompt (" in caplog.text
    assert len(read_calib_file(calib).records) == 2 * 2
