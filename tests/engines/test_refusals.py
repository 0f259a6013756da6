"""Each combination the target engine cannot load is refused when the YAML is loaded, naming the YAML item,
its layer patterns, the reason and the alternative; the target comes from the saver and --tag."""

from __future__ import annotations

import pytest
import yaml

from modelslim_core.errors import ConfigError
from modelslim_core.formats.engines import check_target_engines
from modelslim_core.protocol.config import parse_quant_config
from tests.engines._harness import QCONFIGS

SPARSE = ("{type: sparse_quant, qconfig: {act: {scope: per_tensor, dtype: int8, symmetric: false, method: minmax}, "
          "weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}}}")


def spec(item: str, saver: str = "ascendv1_saver"):
    raw = yaml.safe_load(f"apiversion: modelslim_v1\nspec:\n  process:\n    - {item}\n  save: [{{type: {saver}}}]\n")
    return parse_quant_config(raw, "c.yaml").spec


def linear(key: str, include: str = "*mlp*") -> str:
    return f"{{type: linear_quant, qconfig: {QCONFIGS[key]}, include: [{include!r}]}}"


@pytest.mark.parametrize("item, expected", [
    (linear("W8A8_DYNAMIC_GROUP"), ["spec.process[0] (layers *mlp*): W8A8_DYNAMIC with per_group weights is not "
                                     "loadable by vLLM-Ascend", "use scope per_channel"]),
    (linear("W8A16_GROUP"), ["W8A16 with per_group weights", "compressed_tensors_saver"]),
    (linear("W4A4_DYNAMIC_GROUP"), ["W4A4_DYNAMIC with per_group weights"]),
    (linear("W4A4_DYNAMIC_ASYM"), ["W4A4_DYNAMIC with asymmetric weights would be served wrongly: vLLM-Ascend's "
                                    "kernel ignores weight_offset", "use symmetric: true"]),
    (linear("W4A8_DYNAMIC"), ["W4A8_DYNAMIC is loaded by vLLM-Ascend only for MoE experts",
                              "include: ['*mlp.experts.*']"]),
    ("{type: float_sparse}", ["W16A16S is not a scheme vLLM-Ascend loads", "--tag MindIE"]),
    (SPARSE, ["W8A8S is not a scheme vLLM-Ascend loads", "--tag 310P"]),
    ("{type: fa3_quant}", ["FAQuant on non-MLA attention is not loadable by vLLM-Ascend", "dynamic_cache"]),
])
def test_each_refusal_names_item_patterns_reason_and_alternative(item, expected):
    with pytest.raises(ConfigError) as error:
        check_target_engines(spec(item), None, {"model_type": "qwen2"}, "c.yaml")
    message = str(error.value)
    assert message.startswith("c.yaml: ascendv1_saver would write a checkpoint vLLM-Ascend (vllm-ascend 0.23.0) "
                              "cannot load")
    for part in expected:
        assert part in message


def test_w4a8_on_experts_only_and_fa3_on_mla_are_accepted():
    check_target_engines(spec(linear("W4A8_DYNAMIC", "*mlp.experts.*")), None, {}, "c.yaml")
    check_target_engines(spec("{type: fa3_quant}"), None, {"kv_lora_rank": 512}, "c.yaml")


def test_the_tag_names_the_target():
    check_target_engines(spec("{type: float_sparse}"), ["MindIE"], {}, "c.yaml")  # MindIE LLM: not checked
    sparse = spec(SPARSE)
    check_target_engines(sparse, ["Atlas-300I-Duo"], {}, "c.yaml")  # 310P loads W8A8S ...
    assert sparse.save[0].serving_dtype == "float16"  # ... served in float16 (int64 deq_scale)
    with pytest.raises(ConfigError, match="vLLM-Ascend on Atlas 300I"):
        check_target_engines(spec(linear("W8A16")), ["310P"], {}, "c.yaml")



def test_online_quarot_rotations_are_refused_for_vllm_ascend():
    """vLLM-Ascend applies no online rotation (no scheme reads heads_rotation / kronecker_rotation_*): the weights
    of an `online: true` run assume rotations the served model would skip."""
    for item in ("{type: quarot, online: true}", "{type: adapt_rotation, stage: 2, online: true}"):
        with pytest.raises(ConfigError) as error:
            check_target_engines(spec(item), None, {}, "c.yaml")
        message = str(error.value)
        assert ("spec.process[0] (layers *): QUAROT_ONLINE (online: true) writes rotation matrices no vLLM-Ascend "
                "scheme reads (heads_rotation, kronecker_rotation_m/_n)") in message
        assert "instead, set online: false" in message
    check_target_engines(spec("{type: quarot}"), None, {}, "c.yaml")  # folded into the weights: loads
    check_target_engines(spec("{type: quarot, online: true}"), ["MindIE"], {}, "c.yaml")  # MindIE LLM: not checked


def test_310p_loads_static_w8a8_and_w8a8s_only():
    """Atlas 300I's vLLM-Ascend registry has W8A8, W8A8S (and a W8A8_DYNAMIC that allocates static input scales
    our dynamic layers do not carry): anything else is refused, naming what it loads."""
    check_target_engines(spec(linear("W8A8")), ["310P"], {}, "c.yaml")
    with pytest.raises(ConfigError) as error:
        check_target_engines(spec(linear("W8A8_DYNAMIC")), ["310p"], {}, "c.yaml")
    assert ("c.yaml: ascendv1_saver would write a checkpoint vLLM-Ascend on Atlas 300I (310P) (vllm-ascend 0.23.0 "
            "(310P path)) cannot load: spec.process[0] (layers *mlp*): W8A8_DYNAMIC is not a scheme vLLM-Ascend on "
            "Atlas 300I (310P) loads; instead, choose a type vLLM-Ascend on Atlas 300I (310P) loads: W8A8, W8A8S") \
        in str(error.value)


def test_310p_serves_float16_unless_the_saver_says_otherwise():
    explicit = yaml.safe_load(f"apiversion: modelslim_v1\nspec:\n  process:\n    - {SPARSE}\n"
                              "  save: [{type: ascendv1_saver, serving_dtype: bfloat16}]\n")
    config = parse_quant_config(explicit, "c.yaml").spec
    check_target_engines(config, ["310P"], {}, "c.yaml")
    assert config.save[0].serving_dtype == "bfloat16"  # an explicit choice is kept (and checked by the harness)


INTERNVL_MOE = {"model_type": "internvl", "text_config": {"model_type": "qwen3_moe", "num_experts": 8}}


def test_quantized_experts_of_a_model_type_without_an_expert_layout_are_refused():
    """vLLM-Ascend finds no fused-expert layout for `internvl` (a Qwen3-MoE language model inside): quantized
    experts would fail its load; the same item with the experts excluded, or a dense model, is accepted."""
    item = linear("W8A8_DYNAMIC", "model.language_model.layers.*.mlp.*")
    with pytest.raises(ConfigError) as error:
        check_target_engines(spec(item), None, INTERNVL_MOE, "c.yaml")
    message = str(error.value)
    assert "W8A8_DYNAMIC on the MoE experts of model type 'internvl' is not loadable by vLLM-Ascend" in message
    assert "'*mlp.experts.*' to this item's exclude" in message
    excluded = item[:-1] + ", exclude: ['*mlp.experts.*']}"
    check_target_engines(spec(excluded), None, INTERNVL_MOE, "c.yaml")
    check_target_engines(spec(item), None, {"model_type": "internvl", "text_config": {"model_type": "qwen3"}}, "c.yaml")
    check_target_engines(spec(item), None, {"model_type": "qwen3_moe", "num_experts": 8}, "c.yaml")
    check_target_engines(spec(item), ["MindIE"], INTERNVL_MOE, "c.yaml")


def test_a_folded_rotation_of_a_model_type_without_an_expert_layout_is_not_an_expert_refusal():
    """QuaRot's exported rotation (tag QUAROT, an extra file) leaves the experts' weights float: only quantized
    linear schemes on the experts need vLLM-Ascend's fused-expert layout."""
    check_target_engines(spec("{type: quarot, export_extra_info: true}"), None, INTERNVL_MOE, "c.yaml")
    with pytest.raises(ConfigError, match="QUAROT_ONLINE") as error:
        check_target_engines(spec("{type: quarot, online: true}"), None, INTERNVL_MOE, "c.yaml")
    assert "MoE experts" not in str(error.value)


def test_expert_layouts_match_the_installed_engine():
    from modelslim_core.formats.engines import VLLM_ASCEND_EXPERT_LAYOUTS

    from modelslim.engines.stubs import hardware_stubs

    with hardware_stubs(lambda: None):
        from vllm_ascend.quantization import modelslim_config

        mapping = modelslim_config.packed_modules_model_mapping
    layouts = {model_type for model_type, packed in mapping.items()
               if any("experts" in key or any("experts" in name for name in names) for key, names in packed.items())}
    assert layouts == VLLM_ASCEND_EXPERT_LAYOUTS
