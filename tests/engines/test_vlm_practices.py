"""The shipped VLM practices (Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE, Qwen2.5-Omni thinker) on tiny models and a
generated multimodal set, put through vLLM-Ascend 0.23.0's own loader: zero mismatches, vision tower included."""

from __future__ import annotations

import pytest

from tests.engines._harness import problems
from tests.vlm._helpers import practice_config, quantize
from tests.vlm.conftest import BUILDERS
from tests.vlm.media_files import media_set


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_vlm_practice_loads_in_vllm_ascend(family, tmp_path):
    model = BUILDERS[family](tmp_path / "model")
    out = quantize(family, model, tmp_path / "out", practice_config(family, media_set(tmp_path / "media")))
    assert problems(out) == []
