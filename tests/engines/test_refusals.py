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

