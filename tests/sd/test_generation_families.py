"""Generation families: tiny Wan2.2 / FLUX.1 / HunyuanVideo / Qwen-Image-Edit transformers quantized with every
shipped practice, reloaded from the saved tensors by the reference runtime (modelslim_sd.reference_runtime)
and compared with the float denoiser on its own inputs; Wan2.2 capture per task and expert; quant-type lookup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.errors import ConfigError, UnsupportedError
from modelslim_sd.reference_runtime import load_mindie_denoiser
from tests.sd.tiny_families import make_flux, make_hunyuan_video, make_qwen_image_edit, make_wan22

pytestmark = pytest.mark.usefixtures("cli_env")

#: pipeline -> (model type, builder, experts (output subdirectories), quant types)
PIPELINES = {
    "wan2_2-t2v": ("Wan2.2-T2V-A14B", lambda p: make_wan22(p, "t2v"), ("high_noise_model", "low_noise_model")),
    "wan2_2-i2v": ("Wan2.2-I2V-A14B", lambda p: make_wan22(p, "i2v"), ("high_noise_model", "low_noise_model")),
    "wan2_2-ti2v": ("Wan2.2-TI2V-5B", lambda p: make_wan22(p, "ti2v"), ("",)),
    "flux1": ("FLUX.1-dev", make_flux, ("",)),
    "hunyuan_video": ("HunyuanVideo", make_hunyuan_video, ("",)),
    "qwen_image_edit": ("Qwen-Image-Edit-2509", make_qwen_image_edit, ("",)),
}
QUANT_TYPES = ("w8a8f8", "w4a4f8", "w4a4f4")
#: Relative error bound at the denoiser output per quant type: about 2.5x the largest measured value
#: (w8a8f8 0.0015-0.015, w4a4f8 0.006-0.027, w4a4f4 0.006-0.029 on these tiny pipelines).
BOUNDS = {"w8a8f8": 0.04, "w4a4f8": 0.07, "w4a4f4": 0.075}


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {name: build(root / name) for name, (_, build, _) in PIPELINES.items()}


def denoiser_inputs(name: str, model: torch.nn.Module) -> dict:
    """Inputs of one denoiser call, shaped as its pipeline passes them."""
    g = torch.Generator().manual_seed(0)
    rand = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    if name.startswith("wan"):
        channels = 36 if name == "wan2_2-i2v" else 16  # I2V: noise latents + mask + encoded first frame
        return {"hidden_states": rand(1, channels, 2, 8, 8), "timestep": torch.tensor([500]),
                "encoder_hidden_states": rand(1, 8, 32), "return_dict": False}
    if name == "flux1":
        ids = torch.zeros(16, 3)
        ids[:, 1], ids[:, 2] = torch.arange(16) // 4, torch.arange(16) % 4
        return {"hidden_states": rand(1, 16, 64), "encoder_hidden_states": rand(1, 8, 32), "pooled_projections": rand(1, 32),
                "timestep": torch.tensor([0.5]), "guidance": torch.tensor([3.5]), "img_ids": ids, "txt_ids": torch.zeros(8, 3),
                "return_dict": False}
    if name == "hunyuan_video":
        return {"hidden_states": rand(1, 16, 2, 8, 8), "timestep": torch.tensor([500]), "encoder_hidden_states": rand(1, 8, 32),
                "encoder_attention_mask": torch.ones(1, 8), "pooled_projections": rand(1, 32),
                "guidance": torch.tensor([6000.0]), "return_dict": False}
    return {"hidden_states": rand(1, 32, 64), "encoder_hidden_states": rand(1, 8, 32),
            "encoder_hidden_states_mask": torch.ones(1, 8), "timestep": torch.tensor([0.5]),
            "img_shapes": [[(1, 4, 4), (1, 4, 4)]], "return_dict": False}


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.float() - expected.float()).norm() / expected.float().norm()).item()


@pytest.mark.slow
@pytest.mark.parametrize("quant_type", QUANT_TYPES)
@pytest.mark.parametrize("name", list(PIPELINES))
def test_practice_quantizes_and_reloads_within_bound(pipelines, tmp_path, name, quant_type):
    model_type, _, experts = PIPELINES[name]
    model_dir = pipelines[name]
    out = run_quant(QuantArgs(str(model_dir), str(tmp_path / "out"), model_type, quant_type=quant_type, device="cpu", yes=True))
    for expert, component in zip(experts, ("transformer", "transformer_2")):
        saved = out / expert if expert else out
        (description_file,) = saved.glob("quant_model_description_*.json")
        description = json.loads(description_file.read_text())
        assert (saved / f"quant_model_weight_{description['model_quant_type'].lower()}.safetensors").is_file()
        assert any(key.endswith(".q_rot") for key in description)
        assert any(key.endswith(".quant_type") for key in description)
        float_model, quantized = load_mindie_denoiser(model_dir, component, saved)
        inputs = denoiser_inputs(name, float_model)
        with torch.no_grad():
            expected, actual = float_model(**inputs)[0], quantized(**inputs)[0]
        error = relative_error(actual, expected)
        print(f"RESULT {name} {quant_type} {expert or 'transformer'} {description['model_quant_type']} {error:.4f}")
        assert 0 < error < BOUNDS[quant_type], error


def test_wan22_t2v_capture_records_each_expert_on_its_timesteps(pipelines, tmp_path):
    from modelslim_sd.families.wan2_2 import Wan22Adapter
    from tests.sd.tiny_families import TINY_WAN22

    adapter = Wan22Adapter("Wan2.2-T2V-A14B", pipelines["wan2_2-t2v"])
    config = adapter.parse_inference_config(dict(TINY_WAN22), "inference_config")
    records = adapter.capture_calibration(config, torch.device("cpu"), torch.float32)
    boundary = 0.5 * 1000
    high, low = records["transformer"], records["transformer_2"]
    assert len(high) + len(low) == 4 * 2 and high and low
    assert all(float(r.kwargs["timestep"].max()) >= boundary for r in high)
    assert all(float(r.kwargs["timestep"].max()) < boundary for r in low)
    assert [adapter.calibration_file_name(config, d) for d in adapter.denoisers()] == [
        "calib_data_t2v-A14B_high_noise_model.pth", "calib_data_t2v-A14B_low_noise_model.pth"]


def test_generation_model_is_never_offered_an_llm_practice(pipelines, tmp_path):
    with pytest.raises(UnsupportedError) as info:
        run_quant(QuantArgs(str(pipelines["flux1"]), str(tmp_path / "o"), "FLUX.1-dev", quant_type="w8a8", device="cpu", yes=True))
    message = f"{info.value.message} {info.value.hint}"
    assert "generation model" in message and "w4a4f4" in message and "w8a8f8" in message


def test_any_diffusers_pipeline_is_quantized_data_free_by_its_denoiser(pipelines, tmp_path):
    """A model type no family claims: the transformer is found from model_index.json; a data-free config runs,
    --quant_type says there is no practice, and a config that needs data is refused with the supported types."""
    from tests.sd._helpers import write_config
    from tests.tiny_models import REPO
    import yaml

    config = yaml.safe_load((REPO / "practices" / "flux1" / "flux1-w8a8f8.yaml").read_text())
    del config["spec"]["multimodal_sd_config"]["inference_config"]  # nothing runs a pipeline it does not know
    path = write_config(tmp_path / "flux.yaml", config)
    out = run_quant(QuantArgs(str(pipelines["flux1"]), str(tmp_path / "out"), "MyDiT-1", config_path=str(path), device="cpu"))
    description = json.loads((out / "quant_model_description_w8a8_mxfp8.json").read_text())
    assert description["single_transformer_blocks.1.proj_out.weight"] == "W8A8_MXFP8"
    with pytest.raises(UnsupportedError, match="generation model"):
        run_quant(QuantArgs(str(pipelines["flux1"]), str(tmp_path / "o2"), "MyDiT-1", quant_type="w8a8f8", device="cpu", yes=True))
    config["spec"]["process"][0]["qconfig"] = {
        "act": {"scope": "per_tensor", "dtype": "int8", "symmetric": False, "method": "minmax"},
        "weight": {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}}
    config["spec"]["multimodal_sd_config"] = {"dump_config": {"enable_dump": True}}
    path = write_config(tmp_path / "static.yaml", config)
    with pytest.raises(ConfigError, match="no generation adapter"):
        run_quant(QuantArgs(str(pipelines["flux1"]), str(tmp_path / "o3"), "MyDiT-1", config_path=str(path), device="cpu"))
