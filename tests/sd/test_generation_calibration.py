"""Calibration capture of the generation families: per task and per expert files, reused only when every one
matches, all captured again when any is missing or stale; image-conditioned capture for I2V."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from PIL import Image

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_sd.calib_file import read_calib_file
from modelslim_sd.families.wan2_2 import Wan22Adapter, Wan22I2VAdapter, Wan22TI2VAdapter
from tests.sd._helpers import write_config
from tests.sd.tiny_families import TINY_WAN22, make_wan22
from tests.tiny_models import REPO

pytestmark = pytest.mark.usefixtures("cli_env")

IMAGE = str(REPO / "calib" / "vlm_calib" / "scene_0.jpg")
FILES = ("calib_data_t2v-A14B_high_noise_model.pth", "calib_data_t2v-A14B_low_noise_model.pth")


@pytest.fixture(scope="module")
def t2v(tmp_path_factory) -> Path:
    return make_wan22(tmp_path_factory.mktemp("wan22") / "t2v", "t2v")


def static_config(dump: Path, **inference) -> dict:
    """Static int8 attention activations: a config that needs calibration data."""
    return {
        "apiversion": "multimodal_sd_modelslim_v1",
        "spec": {
            "process": [{"type": "linear_quant", "include": ["*attn1*"], "qconfig": {
                "act": {"scope": "per_tensor", "dtype": "int8", "symmetric": False, "method": "minmax"},
                "weight": {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}}}],
            "save": [{"type": "mindie_format_saver", "part_file_size": 0}],
            "multimodal_sd_config": {"dump_config": {"enable_dump": True, "dump_data_dir": str(dump)},
                                     "inference_config": {**TINY_WAN22, "task": "t2v-A14B", **inference}},
        },
    }


def quantize(model: Path, out: Path, config: dict) -> Path:
    path = write_config(out.parent / f"{out.name}.yaml", config)
    return run_quant(QuantArgs(str(model), str(out), "Wan2.2-T2V-A14B", config_path=str(path), device="cpu"))


def forbid_capture(monkeypatch):
    def fail(*_args, **_kwargs):
        raise AssertionError("the float pipeline ran although every cached calibration file matches")

    monkeypatch.setattr(Wan22Adapter, "capture_calibration", fail)


@pytest.mark.slow
def test_two_expert_cache_is_reused_and_invalidated(t2v, tmp_path, monkeypatch, caplog):
    dump = tmp_path / "dump"
    out = quantize(t2v, tmp_path / "first", static_config(dump))
    for expert in ("high_noise_model", "low_noise_model"):
        assert (out / expert / "quant_model_description_w8a8.json").is_file()
    first = {name: read_calib_file(dump / name) for name in FILES}
    assert {name: len(f.records) for name, f in first.items()} == {FILES[0]: 6, FILES[1]: 2}
    assert first[FILES[0]].fingerprint.settings["denoiser"] == "transformer"

    with monkeypatch.context() as patch:
        forbid_capture(patch)
        quantize(t2v, tmp_path / "second", static_config(dump))  # both files match: reused

    (dump / FILES[1]).unlink()  # one expert's file missing: both are captured again
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="modelslim_sd"):
        quantize(t2v, tmp_path / "third", static_config(dump))
    assert "Capturing calibration data" in caplog.text
    assert all((dump / name).is_file() for name in FILES)

    caplog.clear()
    quantize(t2v, tmp_path / "fourth", static_config(dump, prompt="a lighthouse in a storm"))
    assert "prompt ('a small robot waters a plant' -> 'a lighthouse in a storm')" in caplog.text
    fourth = read_calib_file(dump / FILES[0])
    assert not torch.equal(fourth.records[0].kwargs["encoder_hidden_states"],
                           first[FILES[0]].records[0].kwargs["encoder_hidden_states"])


@pytest.mark.parametrize("kind, cls, task", [("i2v", Wan22I2VAdapter, "i2v-A14B"), ("ti2v", Wan22TI2VAdapter, "ti2v-5B")])
def test_image_conditioned_capture(tmp_path, kind, cls, task):
    model = make_wan22(tmp_path / kind, kind)
    adapter = cls("x", model)
    config = adapter.parse_inference_config({**TINY_WAN22, "task": task, "image": IMAGE}, "inference_config")
    records = adapter.capture_calibration(config, torch.device("cpu"), torch.float32)
    calls = [r for component in records.values() for r in component]
    assert len(calls) == 4 * 2
    latents = calls[0].kwargs["hidden_states"]
    # I2V concatenates the image condition (mask + encoded first frame) to the 16 noise channels; TI2V blends
    # the encoded image into the first latent frame and keeps 16 channels
    assert latents.shape[1] == (36 if kind == "i2v" else 16)
    assert adapter.calibration_file_name(config, adapter.denoisers()[0]).startswith(f"calib_data_{task}_")


def test_i2v_capture_needs_an_image_before_anything_loads(tmp_path, monkeypatch):
    """Data-free I2V configs need no image; a capture without one is refused before the pipeline loads."""
    from modelslim_core.errors import ConfigError
    from modelslim_sd.families import base

    model = make_wan22(tmp_path / "i2v", "i2v")
    adapter = Wan22I2VAdapter("x", model)
    config = adapter.parse_inference_config({**TINY_WAN22, "task": "i2v-A14B"}, "inference_config")
    monkeypatch.setattr(base, "load_pipeline", lambda *a, **k: pytest.fail("the pipeline was loaded"))
    with pytest.raises(ConfigError, match="image is not set"):
        adapter.capture_calibration(config, torch.device("cpu"), torch.float32)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["flux1", "hunyuan_video"])
def test_multi_stream_family_calibrates_on_a_prompt_set_with_the_cache_reused_and_invalidated(
        family, tmp_path, monkeypatch, caplog):
    """A complete tiny pipeline and a static config whose prompts come from spec.dataset: one generation per
    prompt is recorded into calib_data_<task>_transformer.pth, the dual- and single-stream blocks are calibrated
    in turn (each gets both streams of the block before), the cache is reused by a run with the same prompt
    set and captured again when it changes; the output loads in MindIE-SD."""
    from modelslim.engines.conformance import check_saved
    from modelslim_sd.families.flux import Flux1Adapter
    from modelslim_sd.families.hunyuan_video import HunyuanVideoAdapter
    from tests.sd import tiny_families as tiny

    adapter, model_type, build, settings, steps, task = {
        "flux1": (Flux1Adapter, "FLUX.1-dev", tiny.make_flux_pipeline, tiny.TINY_FLUX, "num_inference_steps", "t2i"),
        "hunyuan_video": (HunyuanVideoAdapter, "HunyuanVideo", tiny.make_hunyuan_video_pipeline,
                          tiny.TINY_HUNYUAN_VIDEO, "infer_steps", "t2v"),
    }[family]
    model = build(tmp_path / family)
    dump = tmp_path / "dump"

    def run(name: str, prompts: list[str]) -> Path:
        index = tmp_path / f"{name}.jsonl"
        index.write_text("".join(f'{{"text": "{prompt}"}}\n' for prompt in prompts), encoding="utf-8")
        config = static_config(dump)
        config["spec"]["process"][0]["include"] = ["*transformer_blocks.*attn.to_*"]
        config["spec"]["dataset"] = str(index)
        config["spec"]["multimodal_sd_config"]["inference_config"] = dict(settings)
        path = write_config(tmp_path / f"{name}.yaml", config)
        return run_quant(QuantArgs(str(model), str(tmp_path / name), model_type, config_path=str(path), device="cpu"))

    out = run("first", ["a red kite over a hill", "rain on a window"])
    calib = dump / f"calib_data_{task}_transformer.pth"
    assert len(read_calib_file(calib).records) == 2 * settings[steps]  # prompts x steps (no true CFG)
    description = json.loads(next(out.glob("quant_model_description_*.json")).read_text())
    assert description["single_transformer_blocks.1.attn.to_q.weight"] == "W8A8"
    assert [str(problem) for problem in check_saved(out)] == []
    with monkeypatch.context() as patch:
        patch.setattr(adapter, "capture_calibration",
                      lambda *a, **k: pytest.fail("captured again although the cached calibration matches"))
        run("second", ["a red kite over a hill", "rain on a window"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="modelslim_sd"):
        run("third", ["a lighthouse in a storm"])
    assert "Capturing calibration data" in caplog.text
    assert len(read_calib_file(calib).records) == settings[steps]


def test_i2v_fingerprint_follows_the_image_contents(tmp_path):
    """An image replaced at the same path is new calibration data: the capture settings (the cache key) change."""
    model = make_wan22(tmp_path / "i2v", "i2v")
    adapter = Wan22I2VAdapter("x", model)
    image = tmp_path / "frame.png"
    Image.new("RGB", (16, 16), (10, 20, 30)).save(image)
    config = adapter.parse_inference_config({**TINY_WAN22, "task": "i2v-A14B", "image": str(image)}, "inference_config")
    before = adapter.capture_settings(config)
    assert before == adapter.capture_settings(config)
    Image.new("RGB", (16, 16), (200, 20, 30)).save(image)
    after = adapter.capture_settings(config)
    assert before["image"] == after["image"] and before["image_digests"] != after["image_digests"]
