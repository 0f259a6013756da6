"""Every shipped generation practice, run on a tiny pipeline of its family with mindie_format_saver, and its
output put through MindIE-SD 3.1.0's own `quantize()` (modelslim.engines.mindie_sd): every described linear
is replaced and every described attention gets MindIE-SD's FA kernel. FA3 settings MindIE-SD would skip or
refuse are refused when the YAML is loaded (modelslim_sd/mindie_fa.py), each with its message.

The practices are discovered from practices/ (apiversion multimodal_sd_modelslim_v1), so a new one is swept
too; FAST holds one practice per checkpoint tag and FA type, the rest are marked slow."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import os
from pathlib import Path

import pytest
import yaml

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.errors import ConfigError
from tests.sd._helpers import practice_config, write_config
from tests.sd.tiny_families import make_flux, make_hunyuan_video, make_qwen_image_edit, make_wan22
from tests.tiny_models import REPO

if importlib.util.find_spec("mindiesd") is None:
    pytest.skip("the engines dependency group (uv sync --locked on Linux x86_64) provides mindiesd",
                allow_module_level=True)

from modelslim.engines.conformance import check_saved  # noqa: E402

pytestmark = pytest.mark.usefixtures("cli_env")

#: practice name prefix -> (model type, tiny pipeline builder; None: the session's tiny Wan2.1)
FAMILIES = {
    "wan2_1-": ("Wan2.1", None),
    "wan2_2-t2v-": ("Wan2.2-T2V-A14B", lambda path: make_wan22(path, "t2v")),
    "wan2_2-i2v-": ("Wan2.2-I2V-A14B", lambda path: make_wan22(path, "i2v")),
    "wan2_2-ti2v-": ("Wan2.2-TI2V-5B", lambda path: make_wan22(path, "ti2v")),
    "flux1-": ("FLUX.1-dev", make_flux),
    "hunyuan_video-": ("HunyuanVideo", make_hunyuan_video),
    "qwen_image_edit-": ("Qwen-Image-Edit-2509", make_qwen_image_edit),
}
#: The fast subset and the tags each must carry: with test_mindie_sd_engine.py (both Wan2.1 practices, W8A8
#: and W8A8_DYNAMIC, in the fast subset) every linear tag and FA type the practices use.
FAST = {
    "wan2_2-ti2v-w4a4f4": {"W8A8_MXFP8", "W4A4_MXFP4", "FP8_DYNAMIC", "MXFP4_DYNAMIC"},
    "qwen_image_edit-w4a4f4": {"W4A4_MXFP4_DUALSCALE", "MXFP4_DYNAMIC"},
}
SD_APIVERSION = "multimodal_sd_modelslim_v1"
EXPERTS = ("high_noise_model", "low_noise_model")


@functools.cache
def generation_practices() -> list[Path]:
    return sorted(path for path in (REPO / "practices").glob("*/*.yaml")
                  if yaml.safe_load(path.read_text()).get("apiversion") == SD_APIVERSION)


def family_of(practice: Path) -> str:
    return next(prefix for prefix in sorted(FAMILIES, key=len, reverse=True) if practice.stem.startswith(prefix))


def practice_params() -> list:
    return [pytest.param(path, id=path.stem, marks=() if path.stem in FAST else pytest.mark.slow)
            for path in generation_practices()]


@pytest.fixture(scope="module")
def pipeline_dirs(tmp_path_factory, request):
    """Tiny pipelines, each built the first time a practice of its family asks for it."""
    root = tmp_path_factory.mktemp("sweep")
    built: dict[str, Path] = {}

    def get(prefix: str) -> Path:
        if prefix not in built:
            builder = FAMILIES[prefix][1]
            built[prefix] = (request.getfixturevalue("tiny_wan") if builder is None
                             else builder(root / prefix.rstrip("-")))
        return built[prefix]

    return get


def saved_dirs(out: Path) -> list[Path]:
    """The output directory of each denoiser (the two experts' subdirectories for Wan2.2-A14B)."""
    experts = [out / expert for expert in EXPERTS if (out / expert).is_dir()]
    return experts or [out]


def described_tags(saved: Path) -> set[str]:
    (description,) = saved.glob("quant_model_description_*.json")
    return {value for value in json.loads(description.read_text()).values() if isinstance(value, str)}


def quantize_practice(practice: Path, model: Path, save: Path) -> Path:
    prefix = family_of(practice)
    config = practice_config(practice) if prefix == "wan2_1-" else yaml.safe_load(practice.read_text())
    path = write_config(save.parent / f"{save.name}.yaml", config)
    previous = os.umask(0o022)  # the usual umask: the saver itself must make the files 0o640
    try:
        return run_quant(QuantArgs(str(model), str(save), FAMILIES[prefix][0], config_path=str(path), device="cpu"))
    finally:
        os.umask(previous)


def test_the_sweep_finds_every_family_and_the_fast_subset():
    stems = {path.stem for path in generation_practices()}
    assert set(FAST) <= stems and len(stems) >= 20
    assert {family_of(path) for path in generation_practices()} == set(FAMILIES)


@pytest.mark.parametrize("practice", practice_params())
def test_practice_output_loads_in_mindie_sd(practice, pipeline_dirs, tmp_path):
    out = quantize_practice(practice, pipeline_dirs(family_of(practice)), tmp_path / "out")
    dirs = saved_dirs(out)
    if family_of(practice).startswith(("wan2_2-t2v", "wan2_2-i2v")):
        assert [d.name for d in dirs] == list(EXPERTS)
    for saved in dirs:
        assert [str(problem) for problem in check_saved(saved)] == [], saved
    if practice.stem in FAST:
        assert FAST[practice.stem] <= set().union(*map(described_tags, dirs))


# --- FA3 settings MindIE-SD would skip or refuse: refused when the YAML is loaded ---------------------------

FP8_TOKEN = {"dtype": "fp8_e4m3", "scope": "per_token", "symmetric": True, "method": "minmax"}
MXFP8_BLOCK = {**FP8_TOKEN, "dtype": "mxfp8", "scope": "per_block"}
MXFP4_BLOCK = {**FP8_TOKEN, "dtype": "mxfp4", "scope": "per_block"}
ROTATION = {"type": "online_quarot", "include": ["*attn"]}
NEEDS_ROTATION = "serves {} attention only with the Q/K rotation of online_quarot"
SKIPPED = "applies FA quantization only as fp8_e4m3 per_token (FP8_DYNAMIC), mxfp8 per_block (MXFP8_DYNAMIC) or " \
          "mxfp4 per_block (MXFP4_DYNAMIC), the same for Q, K and V; it skips {} without an error"


def fa_item(qconfig=None, details=None) -> dict:
    item = {"type": "fa3_quant", "include": ["*attn"]}
    if qconfig is not None:
        item["qconfig"] = qconfig
    if details is not None:
        item["details"] = details
    return item


def flux_config(*extra: dict) -> dict:
    """The FLUX.1 w8a8f8 practice's linear item followed by `extra` process items."""
    config = yaml.safe_load((REPO / "practices" / "flux1" / "flux1-w8a8f8.yaml").read_text())
    config["spec"]["process"] = [config["spec"]["process"][0], *copy.deepcopy(extra)]
    return config


REFUSED = {
    "fp8-without-rotation": ([fa_item(FP8_TOKEN)], "spec.process[1]", NEEDS_ROTATION.format("FP8_DYNAMIC")),
    "mxfp8-without-rotation": ([fa_item(MXFP8_BLOCK)], "spec.process[1]", NEEDS_ROTATION.format("MXFP8_DYNAMIC")),
    "fp8-rotation-misses-attentions": (
        [{"type": "online_quarot", "include": ["transformer_blocks.0.*"]}, fa_item(FP8_TOKEN)], "spec.process[2]",
        NEEDS_ROTATION.format("FP8_DYNAMIC")),
    "fp8-rotation-excludes-attentions": (
        [{**ROTATION, "exclude": ["single_transformer_blocks.*"]}, fa_item(FP8_TOKEN)], "spec.process[2]",
        NEEDS_ROTATION.format("FP8_DYNAMIC")),
    "int8-per-token": ([ROTATION, fa_item({**FP8_TOKEN, "dtype": "int8"})], "spec.process[2]",
                       SKIPPED.format("int8 per_token")),
    "int8-per-head-static": ([ROTATION, fa_item({**FP8_TOKEN, "dtype": "int8", "scope": "per_head"})],
                             "spec.process[2]", SKIPPED.format("int8 per_head")),
    "mixed-branches": (
        [ROTATION, fa_item(details={"fa_q": FP8_TOKEN, "fa_k": MXFP4_BLOCK, "fa_v": MXFP4_BLOCK})], "spec.process[2]",
        SKIPPED.format("Q, K and V with different settings (Q fp8_e4m3 per_token, K mxfp4 per_block, "
                       "V mxfp4 per_block)")),
}


@pytest.fixture(scope="module")
def tiny_flux(tmp_path_factory) -> Path:
    return make_flux(tmp_path_factory.mktemp("flux") / "flux1")


@pytest.mark.parametrize("case", list(REFUSED))
def test_fa3_setting_mindie_sd_cannot_serve_is_refused_at_yaml_load(case, tiny_flux, tmp_path):
    process, item, reason = REFUSED[case]
    path = write_config(tmp_path / "config.yaml", flux_config(*process))
    with pytest.raises(ConfigError) as info:
        run_quant(QuantArgs(str(tiny_flux), str(tmp_path / "out"), "FLUX.1-dev", config_path=str(path), device="cpu"))
    message = f"{info.value.message} {info.value.hint}"
    assert message.startswith(f"{path}: {item} (attentions *attn): ") and reason in message, message
    assert "MindIE-SD (mindiesd 3.1.0)" in message
    assert not (tmp_path / "out").exists()  # refused before the model is loaded or anything written


@pytest.mark.parametrize("process", [
    pytest.param([fa_item(MXFP4_BLOCK)], id="mxfp4-unrotated"),
    pytest.param([ROTATION, fa_item(MXFP8_BLOCK)], id="mxfp8-rotated"),
    pytest.param([fa_item(FP8_TOKEN), ROTATION], id="fp8-rotation-listed-after"),
])
def test_fa3_settings_mindie_sd_serves_are_accepted_and_load(process, tiny_flux, tmp_path):
    path = write_config(tmp_path / "config.yaml", flux_config(*process))
    out = run_quant(QuantArgs(str(tiny_flux), str(tmp_path / "out"), "FLUX.1-dev", config_path=str(path), device="cpu"))
    assert [str(problem) for problem in check_saved(out)] == []


def test_harness_reports_an_fa_type_mindie_sd_skips(tiny_flux, tmp_path):
    """MindIE-SD's quantize() ignores an attention quant_type it does not know; the harness must not."""
    path = write_config(tmp_path / "config.yaml", flux_config(ROTATION, fa_item(FP8_TOKEN)))
    out = run_quant(QuantArgs(str(tiny_flux), str(tmp_path / "out"), "FLUX.1-dev", config_path=str(path), device="cpu"))
    (description_file,) = out.glob("quant_model_description_*.json")
    description = json.loads(description_file.read_text())
    edited = {key: "INT8_DYNAMIC" if value == "FP8_DYNAMIC" else value for key, value in description.items()}
    description_file.write_text(json.dumps(edited))
    found = [str(problem) for problem in check_saved(out)]
    assert len(found) == 4 and all("gave this attention no FA quantization" in text and "'INT8_DYNAMIC'" in text
                                   for text in found), found
