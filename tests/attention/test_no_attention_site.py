"""An attention processor whose targets match no supported attention site is refused before any work.

GLM-5's DSA attention (like DeepSeek-V3.2's) caches a compressed latent, not per-head K/V: `dynamic_cache` used to
run, find nothing to tap and write a checkpoint with no KV scales. Now the run stops at config check time, with a
message naming the model type, what the processor supports and what vLLM-Ascend does for this family instead.
"""

from __future__ import annotations

import pytest

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.errors import ConfigError
from modelslim_runners.pipeline import UnitPipeline
from tests.families._tiny import make_family_model

C8 = "{type: dynamic_cache, qconfig: {scope: per_channel, dtype: int8, symmetric: false, method: minmax}%s}"
FA3 = "{type: fa3_quant%s}"
LINEAR = ("{type: linear_quant, qconfig: {act: {scope: per_token, dtype: int8, symmetric: true, method: minmax}, "
          "weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}}, include: ['*mlp*']}")


@pytest.fixture(scope="module")
def glm5_model(tmp_path_factory):
    return make_family_model(tmp_path_factory.mktemp("glm5") / "model", "glm_moe_dsa")


@pytest.fixture
def no_run(monkeypatch):
    """Fails the test if the runner starts (the refusal must come first)."""
    def started(*_args, **_kwargs):
        raise AssertionError("the runner started: the config was not refused at check time")

    monkeypatch.setattr(UnitPipeline, "run", started)


def _config(tmp_path, *items: str, dataset: str | None = None) -> str:
    body = "".join(f"    - {item}\n" for item in items)
    text = f"apiversion: modelslim_v1\nspec:\n  runner: layer_wise\n  process:\n{body}  save: [{{type: ascendv1_saver}}]\n"
    if dataset:
        text += f"  dataset: {dataset}\n"
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def _refusal(model, tmp_path, model_type: str, config: str | None = None, quant_type: str | None = None,
             dry_run: bool = False) -> ConfigError:
    out = tmp_path / "out"
    args = QuantArgs(str(model), str(out), model_type, config_path=config, quant_type=quant_type, device="cpu",
                     dry_run=dry_run, yes=True)
    with pytest.raises(ConfigError) as caught:
        run_quant(args)
    assert not out.exists(), "nothing may be written before the refusal"
    return caught.value


@pytest.mark.parametrize("item", [C8 % "", FA3 % ""], ids=["dynamic_cache", "fa3_quant"])
def test_glm5_attention_processor_is_refused_naming_the_model_and_what_is_supported(glm5_model, tmp_path, no_run,
                                                                                    small_calib, item):
    error = _refusal(glm5_model, tmp_path, "GLM-5.1", _config(tmp_path, LINEAR, item, dataset=str(small_calib)))
    text = f"{error.message} {error.hint}"
    kind = item.split(",")[0].split(": ")[1].rstrip("}")
    assert f"spec.process[1] ({kind})" in text
    assert "'GLM-5.1'" in text and "'glm_moe_dsa'" in text  # the model type, as given and as its config says
    assert "q_proj, k_proj and v_proj" in text  # what the processor supports
    assert "enable_sparse_sfa_c8" in text  # what the engine does for GLM-5 instead
    assert "remove the dynamic_cache item" in error.hint or "remove the fa3_quant item" in error.hint


def test_glm5_c8_inside_a_group_is_refused(glm5_model, tmp_path, no_run, small_calib):
    group = f"{{type: group, configs: [{LINEAR}, {C8 % ''}]}}"
    error = _refusal(glm5_model, tmp_path, "GLM-5", _config(tmp_path, group, dataset=str(small_calib)))
    assert "spec.process[0].configs[1] (dynamic_cache)" in error.message


def test_glm5_quant_type_w8a8c8_is_refused_whatever_practice_it_falls_back_to(glm5_model, tmp_path, no_run):
    """GLM-5 ships no C8 practice; `--quant_type w8a8c8` falls back to a generic one, which must not run here."""
    error = _refusal(glm5_model, tmp_path, "GLM-5", quant_type="w8a8c8")
    assert "dynamic_cache" in error.message and "glm_moe_dsa" in error.message


def test_glm5_dry_run_refuses_too(glm5_model, tmp_path, small_calib):
    error = _refusal(glm5_model, tmp_path, "GLM-5", _config(tmp_path, LINEAR, C8 % "", dataset=str(small_calib)),
                     dry_run=True)
    assert "no attention module dynamic_cache can act on" in error.message


def test_patterns_that_match_no_attention_module_are_refused(tiny_models, tmp_path, no_run, small_calib):
    """A model with supported attention, but include/exclude selecting none of it: the same refusal, with examples."""
    error = _refusal(tiny_models("qwen2"), tmp_path, "Qwen2-demo",
                     _config(tmp_path, C8 % ", include: ['*cross_attn*']", dataset=str(small_calib)))
    assert "include ['*cross_attn*'] with exclude [] matches none of the 2 attention modules" in error.message
    assert "model.layers.0.self_attn" in error.hint


def test_supported_attention_still_runs(tiny_models, tmp_path, small_calib):
    """The check lets a selecting config through (the C8 scales are written)."""
    import json

    out = tmp_path / "out"
    config = _config(tmp_path, C8 % ", include: ['*layers.1.*']", dataset=str(small_calib))
    run_quant(QuantArgs(str(tiny_models("qwen2")), str(out), "Qwen2-demo", config_path=config, device="cpu"))
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["model.layers.1.self_attn.k_proj.kv_cache_scale"] == "C8"
    assert "model.layers.0.self_attn.k_proj.kv_cache_scale" not in description
