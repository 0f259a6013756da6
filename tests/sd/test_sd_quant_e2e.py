"""Wan2.1 end to end: static W8A8 (captured calibration) and the W8A8 dynamic practice → mindie_format_saver
output, reloaded by the reference runtime from the saved tensors: outputs match the float transformer within
the quantization error, and a short generation runs with the reloaded transformer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_sd.calib_file import read_calib_file
from tests.sd._helpers import MODEL_TYPE, STATIC_PRACTICE, practice_config, quantize
from tests.sd.mindie_reference_runtime import load_mindie_transformer
from tests.sd.tiny_wan import TINY_MODEL_CONFIG

CALIB_NAME = "calib_data_t2v-1.3B_transformer.pth"
BLOCK = "blocks.0"


@pytest.fixture(scope="module")
def runs(tiny_wan: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One static run (captures into its save_path) and one W8A8 dynamic run picked from the practice library."""
    tmp = tmp_path_factory.mktemp("sd-e2e")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        static = quantize(tiny_wan, tmp / "static", practice_config(STATIC_PRACTICE))
        dynamic = run_quant(QuantArgs(str(tiny_wan), str(tmp / "dynamic"), MODEL_TYPE, quant_type="w8a8", device="cpu"))
    return {"static": static, "dynamic": dynamic}


@pytest.fixture(scope="module")
def float_transformer(tiny_wan: Path):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel.from_pretrained(tiny_wan, subfolder="transformer", dtype=torch.float32).eval()


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


def test_static_output_layout(runs):
    out = runs["static"]
    assert sorted(p.name for p in out.iterdir()) == [
        f"{MODEL_TYPE}_best_practice.yaml", CALIB_NAME, "config.json", "model_index.json",
        "quant_model_description_w8a8.json", "quant_model_weight_w8a8.safetensors", "quant_report.json",
    ]
    tensors = load_file(out / "quant_model_weight_w8a8.safetensors")
    shapes = {k.rpartition(".")[2]: (v.dtype, tuple(v.shape)) for k, v in tensors.items()
              if k.startswith(f"{BLOCK}.attn1.to_q.")}
    assert shapes == {
        "weight": (torch.int8, (32, 32)),
        "quant_bias": (torch.int32, (32,)),
        "input_scale": (torch.float32, (1,)),
        "input_offset": (torch.float32, (1,)),
        "deq_scale": (torch.float32, (32,)),  # always fp32 in this format, although the source is bf16
        "bias": (torch.float32, (32,)),
    }
    # the first FFN linear is dynamic, the second stays float in the source dtype
    assert tensors[f"{BLOCK}.ffn.net.0.proj.weight_scale"].shape == (64, 1)
    assert tensors[f"{BLOCK}.ffn.net.2.weight"].dtype == torch.bfloat16
    assert tensors["patch_embedding.weight"].dtype == torch.bfloat16


def test_static_description_tags_and_type(runs):
    description = json.loads((runs["static"] / "quant_model_description_w8a8.json").read_text())
    tensors = load_file(runs["static"] / "quant_model_weight_w8a8.safetensors")
    assert list(description)[-1] == "model_quant_type" and description["model_quant_type"] == "W8A8"
    assert set(description) - {"model_quant_type"} == set(tensors)
    assert description[f"{BLOCK}.attn2.to_k.weight"] == "W8A8"
    assert description[f"{BLOCK}.attn2.to_k.bias"] == "FLOAT"
    assert description[f"{BLOCK}.ffn.net.0.proj.weight"] == "W8A8_DYNAMIC"
    assert description[f"{BLOCK}.ffn.net.2.weight"] == "FLOAT"
    assert description["proj_out.weight"] == "FLOAT"
    assert not {"version", "group_size", "metadata", "optional"} & set(description)


def test_keys_follow_the_transformer_checkpoint(runs, tiny_wan: Path):
    source = set(load_file(tiny_wan / "transformer" / "diffusion_pytorch_model.safetensors"))
    saved = set(load_file(runs["dynamic"] / "quant_model_weight_w8a8_dynamic.safetensors"))
    assert {k for k in saved if k.endswith((".weight", ".bias", "scale_shift_table"))} == source


def test_dynamic_practice_runs_no_generation(runs):
    out = runs["dynamic"]
    names = sorted(p.name for p in out.iterdir())
    assert "quant_model_weight_w8a8_dynamic.safetensors" in names
    assert "quant_model_description_w8a8_dynamic.json" in names
    assert not any(name.endswith(".pth") for name in names)  # data-free: nothing captured or dumped
    description = json.loads((out / "quant_model_description_w8a8_dynamic.json").read_text())
    assert description["model_quant_type"] == "W8A8_DYNAMIC"
    assert description["blocks.1.attn1.to_out.0.weight_offset"] == "W8A8_DYNAMIC"
    assert description["blocks.1.ffn.net.2.weight"] == "FLOAT"  # the reference's exclusion


@pytest.mark.parametrize("kind, bound", [("static", 0.005), ("dynamic", 0.005)])  # measured 0.0022, 0.0017
def test_reloaded_checkpoint_matches_the_float_transformer(runs, float_transformer, tiny_wan, kind, bound):
    quantized = load_mindie_transformer(tiny_wan, runs[kind])
    records = read_calib_file(runs["static"] / CALIB_NAME).records
    assert len(records) == TINY_MODEL_CONFIG["sample_steps"] * 2  # every step, both guidance branches
    with torch.no_grad():
        errors = [relative_error(quantized(*r.args, **r.kwargs)[0], float_transformer(*r.args, **r.kwargs)[0])
                  for r in records]
    assert 0 < max(errors) < bound, errors


def test_short_generation_with_the_reloaded_transformer(runs, tiny_wan):
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(
        tiny_wan, transformer=load_mindie_transformer(tiny_wan, runs["static"]), dtype=torch.float32,
        local_files_only=True,
    )
    pipe.set_progress_bar_config(disable=True)
    video = pipe("a small robot waters a plant", height=32, width=32, num_frames=5, num_inference_steps=2,
                 generator=torch.Generator().manual_seed(0), output_type="np").frames
    assert video.shape == (1, 5, 32, 32, 3)
    assert (video >= 0).all() and (video <= 1).all()
