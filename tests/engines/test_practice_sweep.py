"""Every shipped LLM practice, run on a tiny model of its family and put through vLLM-Ascend 0.23.0's own loader.

Each practice under practices/ either writes a checkpoint the engine loads with zero mismatches, or is refused
when its YAML is loaded, by design, with the message in REFUSED. A new practice folder is swept as soon as its
family has a tiny model in FAMILIES (a folder missing there fails `test_every_llm_practice_folder_is_swept`).
The fast subset runs one practice per export tag (FAST, checked to cover every tag the practices write); the
rest of the sweep is marked slow.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from modelslim_core.errors import ConfigError
from modelslim_core.formats.engines import processor_configs
from modelslim_core.protocol.config import parse_quant_config
from tests.engines._harness import problems
from tests.engines._practices import FAMILIES, PRACTICES, run_practice
from tests.families.test_family_practices import CASES as FAMILY_CASES
from tests.families.test_kimi_k25 import ENGINE_CHECKED as KIMI_K25_CHECKED
from tests.families.test_step3p5 import ENGINE_CHECKED as STEP3P5_CHECKED
from tests.families.test_vlm_families import CASES as VLM_FAMILY_CASES
from tests.vlm.conftest import BUILDERS as VLM_BUILDERS

#: Folders swept elsewhere: generation models (MindIE-SD, tests/sd) and the VLMs (test_vlm_practices.py).
NOT_SWEPT = frozenset({"flux1", "hunyuan_video", "qwen_image_edit", "wan2_1", "wan2_2", *VLM_BUILDERS})
#: Practices whose family tests (tests/families) run them on their own tiny models and check the output with the
#: same vLLM-Ascend harness (check_saved).
SWEPT_IN_FAMILY_TESTS = frozenset([*(case[2] for case in (*FAMILY_CASES, *VLM_FAMILY_CASES)), *KIMI_K25_CHECKED,
                                   *STEP3P5_CHECKED])
#: Practice name suffix -> what the refusal for vLLM-Ascend says (these practices target other engines).
REFUSED = {
    "w16a16s": "W16A16S is not a scheme vLLM-Ascend loads",
    "w8a8s": "W8A8S is not a scheme vLLM-Ascend loads",
}
#: One practice per export tag, run in the fast subset.
FAST = ("qwen2/qwen2-w8a8.yaml", "qwen2/qwen2-w4a8c8.yaml", "qwen2/qwen2-w8a16.yaml", "qwen2/qwen2-w8a8s.yaml",
        "qwen2/qwen2-w16a16s.yaml", "qwen3_moe/qwen3_moe-30b-w4a8.yaml", "deepseek_v3/deepseek_v3-w8a8.yaml",
        "qwen2/qwen2-w4a4.yaml", "longcat_flash/longcat_flash-w4a4-mxfp4.yaml")


def llm_practices() -> list[str]:
    return sorted(str(path.relative_to(PRACTICES)) for path in PRACTICES.glob("*/*.yaml")
                  if path.parent.name not in NOT_SWEPT)


def swept_here() -> list[str]:
    return [p for p in llm_practices() if p.split("/")[0] in FAMILIES]


def _spec(practice: str):
    return parse_quant_config(yaml.safe_load((PRACTICES / practice).read_text(encoding="utf-8")), practice).spec


def saver_type(practice: str) -> str:
    return _spec(practice).save[0].type


def practice_tags(practice: str) -> set[str]:
    """The ascendv1 export tags a practice's layer schemes write (from its YAML, nothing run)."""
    spec = _spec(practice)
    if spec.save[0].type != "ascendv1_saver":
        return set()
    return {scheme.tag for config in processor_configs(spec) for scheme in config.layer_schemes()}


def refusal_for(practice: str) -> str | None:
    stem = Path(practice).stem
    return next((message for suffix, message in REFUSED.items() if stem.endswith(f"-{suffix}")), None)


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
@pytest.mark.parametrize("practice", [p for p in swept_here() if p not in FAST])
def test_practice_loads_in_vllm_ascend_or_is_refused(practice, family_model, sweep_dataset, tmp_path):
    sweep_one(practice, family_model, sweep_dataset, tmp_path)


def test_every_llm_practice_is_swept():
    """Every practice runs through the engine harness: here (FAMILIES), in the VLM sweep, in the family tests."""
    unswept = [p for p in llm_practices() if p.split("/")[0] not in FAMILIES and p not in SWEPT_IN_FAMILY_TESTS]
    assert unswept == [], "give the new practice folder a tiny model in FAMILIES (tests/engines/_practices.py)"


def test_the_fast_subset_covers_every_tag_the_practices_write():
    every = set().union(*(practice_tags(p) for p in swept_here()))
    fast = set().union(*(practice_tags(p) for p in FAST))
    assert {"W8A8", "W8A8_DYNAMIC", "W4A8_DYNAMIC", "C8"} <= every
    assert every - fast == set()
