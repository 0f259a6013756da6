"""Every shipped LLM practice, run on a tiny model of its family and put through vLLM-Ascend 0.23.0's own loader.

Each practice under practices/ either writes a checkpoint the engine loads with zero mismatches, or is refused
when its YAML is loaded, by design, with the message in REFUSED. A new practice folder is swept as soon as its
family has a tiny model in FAMILIES (a folder missing there fails `test_every_llm_practice_folder_is_swept`).
The fast subset runs one practice per export tag (FAST, checked to cover every tag the practices write); the
rest of the sweep is marked slow.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from modelslim_core.errors import ConfigError
from modelslim_core.formats.engines import _processor_configs
from modelslim_core.protocol.config import parse_quant_config
from tests.engines._harness import problems
from tests.families._tiny import make_family_model
from tests.tiny_models import REPO, make_tiny_model

PRACTICES = REPO / "practices"


def _tiny(arch: str) -> Callable[[Path], Path]:
    return lambda target: make_tiny_model(target, arch)


def _family(kind: str) -> Callable[[Path], Path]:
    return lambda target: make_family_model(target, kind)


#: practices/ folder -> (tiny model builder, --model_type).
FAMILIES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "default": (_tiny("mistral"), "Mistral-7B-Instruct-v0.3"),
    "llama": (_tiny("llama"), "Llama-3.1-8B-Instruct"),
    "qwen2": (_tiny("qwen2"), "Qwen2-7B"),
    "qwen2_5": (_tiny("qwen2"), "Qwen2.5-7B-Instruct"),
    "qwen3": (_tiny("qwen3"), "Qwen3-8B"),
    "qwen3_moe": (_tiny("qwen3_moe"), "Qwen3-30B-A3B"),
    "deepseek_v3": (_tiny("deepseek_v3"), "DeepSeek-V3"),
    "deepseek_v3_2": (_tiny("deepseek_v32"), "DeepSeek-V3.2-Exp"),
    "kimi_k2": (_tiny("deepseek_v3"), "Kimi-K2-Thinking"),
    "glm4_moe": (_family("glm4_moe"), "GLM-4.7"),
    "glm4_moe_lite": (_family("glm4_moe_lite"), "GLM-4.7-Flash"),
    "glm_5": (_family("glm_moe_dsa"), "GLM-5"),
    "longcat_flash": (_family("longcat_flash"), "LongCat-Flash-Chat"),
    "minimax_m2": (_family("minimax_m2"), "MiniMax-M2.7"),
    "qwen3_next": (_family("qwen3_next"), "Qwen3-Next-80B-A3B-Instruct"),
}
#: Folders that are not LLM practices for vLLM-Ascend: generation models (MindIE-SD, tests/sd) and the VLMs
#: (their practices run in tests/vlm).
NOT_SWEPT = frozenset({"flux1", "hunyuan_video", "qwen_image_edit", "wan2_1", "wan2_2", "qwen2_5_vl", "qwen3_vl",
                       "qwen3_vl_moe", "qwen2_5_omni_thinker"})
#: Practice name suffix -> what the refusal for vLLM-Ascend says (these practices target other engines).
REFUSED = {
    "w16a16s": "W16A16S is not a scheme vLLM-Ascend loads",
    "w8a8s": "W8A8S is not a scheme vLLM-Ascend loads",
}
#: One practice per export tag, run in the fast subset.
FAST = ("qwen2/qwen2-w8a8.yaml", "qwen2/qwen2-w4a8c8.yaml", "qwen2/qwen2-w8a16.yaml", "qwen2/qwen2-w8a8s.yaml",
        "qwen2/qwen2-w16a16s.yaml", "qwen3_moe/qwen3_moe-30b-w4a8.yaml", "deepseek_v3/deepseek_v3-w8a8.yaml",
        "qwen2/qwen2-w4a4.yaml")


def llm_practices() -> list[str]:
    return sorted(str(path.relative_to(PRACTICES)) for path in PRACTICES.glob("*/*.yaml")
                  if path.parent.name not in NOT_SWEPT)


def _spec(practice: str):
    return parse_quant_config(yaml.safe_load((PRACTICES / practice).read_text(encoding="utf-8")), practice).spec


def saver_type(practice: str) -> str:
    return _spec(practice).save[0].type


def practice_tags(practice: str) -> set[str]:
    """The ascendv1 export tags a practice's layer schemes write (from its YAML, nothing run)."""
    spec = _spec(practice)
    if spec.save[0].type != "ascendv1_saver":
        return set()
    return {scheme.tag for config in _processor_configs(spec) for scheme in config.layer_schemes()}


def refusal_for(practice: str) -> str | None:
    stem = Path(practice).stem
    return next((message for suffix, message in REFUSED.items() if stem.endswith(f"-{suffix}")), None)


def _num_layers(model_dir: Path) -> int:
    config = json.loads((model_dir / "config.json").read_text())
    return int(config.get("num_hidden_layers") or config.get("num_layers"))


def tiny_practice(practice: str, model_dir: Path, dataset: Path, target: Path) -> Path:
    """The shipped practice on a tiny model: its layer-index rules name the tiny model's last layer, its dataset
    is a tiny one; everything else (schemes, saver) is the practice's own."""
    last = _num_layers(model_dir) - 1
    text = (PRACTICES / practice).read_text(encoding="utf-8")
    text = re.sub(r"model\.layers\.(\d+)\.", lambda m: f"model.layers.{min(int(m[1]), last)}.", text)
    data = yaml.safe_load(text)
    if "dataset" in data["spec"]:
        data["spec"]["dataset"] = str(dataset)
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def sweep_dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweep-calib") / "calib.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in (
        "Every practice is judged by the serving engine's loader.", "def f(x):\n    return 3 * x + 1")) + "\n")
    return path


@pytest.fixture(scope="module")
def family_model(tmp_path_factory):
    built: dict[str, Path] = {}

    def get(folder: str) -> Path:
        if folder not in built:
            builder, _ = FAMILIES[folder]
            built[folder] = builder(tmp_path_factory.mktemp(folder) / "model")
        return built[folder]

    return get


def run_practice(practice: str, family_model, dataset: Path, tmp_path: Path, tags: list[str] | None = None) -> Path:
    folder = practice.split("/")[0]
    model_dir = family_model(folder)
    config = tiny_practice(practice, model_dir, dataset, tmp_path / "practice.yaml")
    from modelslim.app.quick_quant import QuantArgs, run_quant  # noqa: PLC0415

    return run_quant(QuantArgs(str(model_dir), str(tmp_path / "out"), FAMILIES[folder][1], config_path=str(config),
                               device="cpu", yes=True, tags=tags))


def sweep_one(practice: str, family_model, dataset: Path, tmp_path: Path) -> None:
    expected_refusal = refusal_for(practice)
    if expected_refusal:
        with pytest.raises(ConfigError) as error:
            run_practice(practice, family_model, dataset, tmp_path)
        assert expected_refusal in str(error.value)
        assert not (tmp_path / "out" / "quant_model_description.json").exists()
        return
    out = run_practice(practice, family_model, dataset, tmp_path)
    if saver_type(practice) == "compressed_tensors_saver":  # vLLM's compressed-tensors path, not the ModelSlim one
        quantization = json.loads((out / "config.json").read_text())["quantization_config"]
        assert quantization["quant_method"] == "compressed-tensors"
        assert not (out / "quant_model_description.json").exists()
        return
    assert problems(out) == []


@pytest.mark.parametrize("practice", FAST)
def test_fast_practice_loads_in_vllm_ascend_or_is_refused(practice, family_model, sweep_dataset, tmp_path):
    sweep_one(practice, family_model, sweep_dataset, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("practice", [p for p in llm_practices() if p not in FAST])
def test_practice_loads_in_vllm_ascend_or_is_refused(practice, family_model, sweep_dataset, tmp_path):
    sweep_one(practice, family_model, sweep_dataset, tmp_path)


def test_every_llm_practice_folder_is_swept():
    folders = {path.parent.name for path in PRACTICES.glob("*/*.yaml")}
    assert folders - NOT_SWEPT - set(FAMILIES) == set(), "give the new practice folder a tiny model in FAMILIES"


def test_the_fast_subset_covers_every_tag_the_practices_write():
    every = set().union(*(practice_tags(p) for p in llm_practices()))
    fast = set().union(*(practice_tags(p) for p in FAST))
    assert {"W8A8", "W8A8_DYNAMIC", "W4A8_DYNAMIC", "C8"} <= every
    assert every - fast == set()
