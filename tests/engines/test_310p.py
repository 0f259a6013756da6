"""`--tag 310P`: the W8A8S practice for Atlas 300I, served in float16, checked by vLLM-Ascend 0.23.0's own 310P
quantization config: int64 deq_scale, every tensor where its W8A8S scheme allocates it."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from tests.engines._harness import problems
from tests.engines._practices import run_practice


@pytest.fixture(scope="module")
def w8a8s_310p(family_model, sweep_dataset, tmp_path_factory):
    return run_practice("qwen2/qwen2-w8a8s.yaml", family_model, sweep_dataset, tmp_path_factory.mktemp("310p"),
                        tags=["310P"])


def test_w8a8s_for_310p_is_written_for_float16_serving(w8a8s_310p):
    description = json.loads((w8a8s_310p / "quant_model_description.json").read_text())
    assert description["metadata"]["serving_dtype"] == "float16"
    assert description["model.layers.0.mlp.down_proj.weight"] == "W8A8S"
    (weights,) = w8a8s_310p.glob("quant_model_weights*.safetensors")
    with safe_open(weights, framework="pt") as handle:
        deq_scale = handle.get_tensor("model.layers.0.mlp.down_proj.deq_scale")
    assert deq_scale.dtype == torch.int64  # the float32 bit pattern, as fp16 kernels read it
    assert bool((deq_scale.to(torch.int32).view(torch.float32) > 0).all())  # positive float32 scales underneath


def test_the_310p_loader_takes_it_and_the_default_one_does_not(w8a8s_310p):
    assert problems(w8a8s_310p, "vllm-ascend-310p") == []
    found = problems(w8a8s_310p, "vllm-ascend")
    assert found and all("W8A8S for layer_type=linear" in line for line in found), found
