"""Step-3.5-Flash (`step3p5`): transformers 5.23 has its configuration and decoder stack but no causal-LM class, so
the release's own modeling code loads it (--trust_remote_code). Without that code, or without trusting it, the
run is refused before anything is loaded or written, saying what is missing."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim.engines.conformance import check_saved
from modelslim_core.errors import ModelError
from tests.families._tiny import make_step3p5
from tests.tiny_models import REPO

IDS = torch.arange(3, 60).reshape(1, -1)
#: Practices these tests put through vLLM-Ascend's loader.
ENGINE_CHECKED = ("step3p5/step3p5-w8a8.yaml",)


@pytest.fixture(scope="module")
def step(tmp_path_factory):
    return make_step3p5(tmp_path_factory.mktemp("step3p5") / "model")


def _practice(tmp_path) -> str:
    data = yaml.safe_load((REPO / "practices/step3p5/step3p5-w8a8.yaml").read_text(encoding="utf-8"))
    dataset = tmp_path / "calib.jsonl"
    dataset.write_text('{"text": "Family calibration: 1 2 3, the quick brown fox."}\n'
                       '{"text": "def f(x):\\n    return x * 2"}\n')
    data["spec"]["dataset"] = str(dataset)
    data["spec"]["save"][0]["part_file_size"] = 0
    path = tmp_path / "practice.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return str(path)


def test_w8a8_with_the_release_code_quantizes_reloads_and_loads(step, tmp_path):
    from transformers import AutoModelForCausalLM

    from modelslim_core.reference_runtime import load_quantized_model

    out = run_quant(QuantArgs(str(step), str(tmp_path / "out"), "Step-3.5-Flash", config_path=_practice(tmp_path),
                              device="cpu", trust_remote_code=True))
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["model.layers.1.self_attn.q_proj.weight"] == "W8A8"
    assert description["model.layers.2.mlp.experts.3.down_proj.weight"] == "W8A8_DYNAMIC"
    assert description["model.layers.1.mlp.shared_experts.up_proj.weight"] == "W8A8_DYNAMIC"
    for name in ("model.layers.1.self_attn.g_proj.weight", "model.layers.1.mlp.gate.weight",
                 "model.layers.3.eh_proj.weight"):  # per-head gate, router, the MTP layer carried over
        assert description[name] == "FLOAT", name
    assert description["metadata"]["carried_float"] == ["model.layers.3."]
    with torch.no_grad():
        reference = AutoModelForCausalLM.from_pretrained(step, dtype=torch.float32, trust_remote_code=True)(
            input_ids=IDS).logits
        logits = load_quantized_model(step, out, trust_remote_code=True)(input_ids=IDS).logits
    error = ((logits - reference).norm() / reference.norm()).item()
    print(f"step3p5-w8a8: relative logits error {error:.4f}")
    assert error < 0.06
    assert [str(problem) for problem in check_saved(out, "vllm-ascend")] == []


def test_untrusted_release_code_is_refused_before_loading(step, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ModelError) as caught:
        run_quant(QuantArgs(str(step), str(out), "Step-3.5-Flash", quant_type="w8a8", device="cpu"))
    assert "modeling_step3p5.Step3p5ForCausalLM" in caught.value.message
    assert "--trust_remote_code true" in caught.value.hint
    assert not out.exists()


def test_a_directory_without_modeling_code_is_refused_naming_what_is_missing(tmp_path):
    model = make_step3p5(tmp_path / "model", with_code=False)
    out = tmp_path / "out"
    with pytest.raises(ModelError) as caught:
        run_quant(QuantArgs(str(model), str(out), "Step-3.5-Flash", quant_type="w8a8", device="cpu",
                            trust_remote_code=True))
    message = caught.value.message
    assert "model_type 'step3p5'" in message and "no causal-LM class" in message
    assert "auto_map.AutoModelForCausalLM" in message and "modeling_step3p5.py" in caught.value.hint
    assert not out.exists()
