"""The multimodal_vlm_modelslim_v1 service: spec rules, runner fallback, one device, early data errors,
practice lookup through the CLI path, and the apiversion/model pairing."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.errors import ConfigError, DatasetError
from modelslim_core.models.resolve import create_adapter
from modelslim_core.runtime.context import DeviceSpec
from modelslim_core.service.base import QuantRequest
from modelslim_vlm.models.base import VlmAdapter
from modelslim_vlm.service import MultimodalVlmService
from modelslim_vlm.spec import parse_vlm_spec
from tests.vlm._helpers import MODEL_TYPES, practice_config, quantize
from tests.vlm.media_files import calib_tool, corrupt, write_index

SAVE = [{"type": "ascendv1_saver", "part_file_size": 0}]


def test_spec_defaults_and_fields():
    spec = parse_vlm_spec({"save": SAVE}, "spec")
    assert (spec.runner, spec.dataset, spec.default_text) == ("layer_wise", "vlm_calib", "Describe this image in detail.")


@pytest.mark.parametrize(("spec", "message"), [
    ({"save": SAVE, "default_text": "  "}, "spec.default_text"),
    ({"save": SAVE, "prior": [{"process": []}]}, "spec.prior"),
    ({"save": SAVE, "dataset": ""}, "spec.dataset"),
    ({"save": SAVE, "multimodal_sd_config": {}}, "multimodal_sd_config"),
    ({"save": SAVE, "process": [{"type": "no_such_processor"}]}, "no_such_processor"),
])
def test_spec_errors_name_the_field(spec: dict, message: str):
    with pytest.raises(ConfigError) as info:
        parse_vlm_spec(spec, "spec")
    assert message in str(info.value)


def _request(tiny_vlms, tmp_path: Path, device: DeviceSpec, family: str = "qwen2_5_vl") -> QuantRequest:
    adapter = create_adapter(MODEL_TYPES[family], tiny_vlms(family), False)
    return QuantRequest(adapter=adapter, model_path=adapter.model_path, save_path=tmp_path / "out", device=device)


def test_several_devices_are_refused(tiny_vlms, tmp_path: Path):
    spec = parse_vlm_spec({"save": SAVE}, "spec")
    with pytest.raises(ConfigError, match="names 2 devices.*runs on one device") as info:
        MultimodalVlmService.check_request(spec, _request(tiny_vlms, tmp_path, DeviceSpec("npu", (0, 1))))
    assert "--device npu:0" in str(info.value)
    MultimodalVlmService.check_request(spec, _request(tiny_vlms, tmp_path, DeviceSpec("npu", (3,))))


def test_modelslim_v1_cannot_quantize_a_vlm(tiny_vlms, tmp_path: Path, cli_env):
    config = {"apiversion": "modelslim_v1", "spec": {"process": [], "save": SAVE}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError, match="use apiversion multimodal_vlm_modelslim_v1"):
        run_quant(QuantArgs(str(tiny_vlms("qwen2_5_vl")), str(tmp_path / "out"), MODEL_TYPES["qwen2_5_vl"],
                            config_path=str(path), device="cpu"))


def test_other_runner_warns_and_runs_layer_wise(tiny_vlms, media_index: Path, tmp_path: Path, cli_env,
                                               caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        out = quantize("qwen2_5_vl", tiny_vlms("qwen2_5_vl"), tmp_path / "out",
                       practice_config("qwen2_5_vl", media_index, runner="model_wise", save=SAVE))
    assert any("runner model_wise is not supported" in r.getMessage() and "using layer_wise" in r.getMessage()
               for r in caplog.records)
    assert (out / "quant_model_weights.safetensors").is_file()  # part_file_size 0: one file, no index
    assert not (out / "quant_model_weights.safetensors.index.json").exists()


@pytest.mark.parametrize(("name", "field"), [("bad.jpg", "image"), ("bad.wav", "audio"), ("bad.mp4", "video")])
def test_corrupt_media_fails_before_the_model_is_loaded(tiny_vlms, tmp_path: Path, cli_env, monkeypatch,
                                                        name: str, field: str):
    folder = tmp_path / "set"
    folder.mkdir()
    calib_tool.write_image(folder / "ok.jpg")
    corrupt(folder / name)
    index = write_index(folder, [{"image": "ok.jpg"}, {field: name, "text": "x"}])
    monkeypatch.setattr(VlmAdapter, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(DatasetError, match=f"bad.{name.split('.')[1]} cannot be decoded"):
        quantize("qwen2_5_omni_thinker", tiny_vlms("qwen2_5_omni_thinker"), tmp_path / "out",
                 practice_config("qwen2_5_omni_thinker", index))


def test_missing_media_fails_with_line_and_field(tiny_vlms, tmp_path: Path, cli_env):
    index = write_index(tmp_path / "set", [{"text": "fine"}, {"video": "gone.mp4"}])
    with pytest.raises(DatasetError, match="line 2: field 'video' names"):
        quantize("qwen3_vl", tiny_vlms("qwen3_vl"), tmp_path / "out", practice_config("qwen3_vl", index))


def test_practice_found_by_quant_type_and_shipped_set_used(tiny_vlms, tmp_path: Path, cli_env):
    """No --config_path: the family's w8a8 practice is picked, with the shipped calib/vlm_calib set."""
    out = run_quant(QuantArgs(str(tiny_vlms("qwen2_5_omni_thinker")), str(tmp_path / "out"),
                              MODEL_TYPES["qwen2_5_omni_thinker"], quant_type="w8a8", device="cpu", yes=True))
    exported = yaml.safe_load((out / "Qwen2.5-Omni-7B_best_practice.yaml").read_text())
    assert exported["apiversion"] == "multimodal_vlm_modelslim_v1" and exported["spec"]["dataset"] == "vlm_calib"
    assert (out / "quant_model_description.json").is_file()


def test_data_free_process_reads_no_dataset(tiny_vlms, tmp_path: Path, cli_env):
    dynamic = {"act": {"scope": "per_token", "dtype": "int8", "symmetric": True, "method": "minmax"},
               "weight": {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}}
    config = {"apiversion": "multimodal_vlm_modelslim_v1",
              "spec": {"process": [{"type": "linear_quant", "qconfig": dynamic,
                                    "include": ["model.language_model.layers.*"]}],
                       "save": SAVE, "dataset": str(tmp_path / "does-not-exist")}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = run_quant(QuantArgs(str(tiny_vlms("qwen3_vl")), str(tmp_path / "out"), MODEL_TYPES["qwen3_vl"],
                              config_path=str(path), device="cpu"))
    assert '"model_quant_type": "W8A8_DYNAMIC"' in (out / "quant_model_description.json").read_text()


@pytest.mark.parametrize(("model_type", "family"), [
    ("Qwen3-VL-8B-Instruct", "qwen3_vl"), ("Qwen3-VL-30B-A3B-Instruct", "qwen3_vl_moe"),
    ("Qwen3-VL-Custom", "qwen3_vl"), ("Qwen2.5-VL-7B-Instruct", "qwen2_5_vl"), ("Qwen2.5-Omni-7B", "qwen2_5_omni_thinker"),
])
def test_adapter_resolution(tiny_vlms, model_type: str, family: str):
    config_family = "qwen3_vl_moe" if family == "qwen3_vl_moe" else family
    adapter = create_adapter(model_type, tiny_vlms(config_family), False)
    assert adapter.family == family and adapter.apiversions == ("multimodal_vlm_modelslim_v1",)
