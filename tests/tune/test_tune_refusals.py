"""`tune` refuses at load what `quant` refuses at YAML load: a template quantizing a linear the model's release
stores fused (formats/fused_release.py) fails before the analysis, any round or any model load."""

from __future__ import annotations

import pytest
import yaml

import modelslim_vlm.models.step3p7 as step3p7
from modelslim.app import quick_quant
from modelslim.app.tune import TuneArgs, run_tune
from modelslim_core.errors import ConfigError
from tests.families._tiny_vlm import make_step3p7
from tests.tiny_models import REPO


@pytest.mark.parametrize("engine_check", [True, False], ids=["vllm-ascend-layout", "fused-release"])
def test_a_template_quantizing_fused_release_experts_is_refused_before_any_round(tmp_path, monkeypatch, engine_check):
    """With the default engine (vLLM-Ascend) its layout check refuses first; without it (a MindIE-only release
    would pass it) the fused-release check still does."""
    if not engine_check:
        monkeypatch.setattr(quick_quant, "check_target_engines", lambda *a, **k: None)
    model = make_step3p7(tmp_path / "model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(step3p7.Step3p7Adapter, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr(step3p7.Step3p7Adapter, "build_skeleton", lambda *a, **k: pytest.fail("model loaded"))
    template = yaml.safe_load((REPO / "practices" / "step3p7" / "step3p7-w8a8.yaml").read_text(encoding="utf-8"))
    template["spec"]["process"][0]["configs"][1]["include"].append("model.language_model.layers.*.mlp.experts.*")
    document = {"strategy": {"type": "binary_fallback", "template": template,
                             "rollback_path": "spec.process.0.configs.1.exclude", "rollback_candidates": ["*layers.0.*"]},
                "evaluation": {"type": "perplexity", "dataset": "heldout_eval.jsonl", "max_ratio": 1.01}}
    config = tmp_path / "tune.yaml"
    config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")

    refusal = r".*cannot load: .*W8A8_DYNAMIC on the MoE experts" if engine_check else \
        r".*layers.1.mlp.experts.0.gate_proj.*stores that linear fused"
    with pytest.raises(ConfigError, match=r"tune.yaml: strategy.template: " + refusal) as refused:
        run_tune(TuneArgs(str(model), str(tmp_path / "out"), str(config), "cpu", "Step-3.7-Flash"))
    assert "'*mlp.experts.*'" in refused.value.message + refused.value.hint
    assert not (tmp_path / "out").exists()
