"""Bad sparse configs fail when the YAML is loaded, naming the field; neither processor runs data-parallel."""

from __future__ import annotations

import pytest

from modelslim_core.processors.float_sparse import FloatSparseConfig, FloatSparseProcessor
from modelslim_core.processors.sparse_quant import SparseQuantConfig, SparseQuantProcessor
from tests.quant_runs import assert_config_error, parse_process_item

W8A8_STATIC = ("{act: {scope: per_tensor, dtype: int8, symmetric: false, method: minmax}, "
               "weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}}")
W8A8_DYNAMIC = ("{act: {scope: per_token, dtype: int8, symmetric: true, method: minmax}, "
                "weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}}")
W8A8_GPTQ = ("{act: {scope: per_tensor, dtype: int8, symmetric: false, method: minmax}, "
             "weight: {scope: per_channel, dtype: int8, symmetric: true, method: gptq}}")


@pytest.mark.parametrize("process,needles", [
    ("{type: float_sparse, sparse_ratio: 1.5}", ["spec.process[0].sparse_ratio", "less than or equal to 1"]),
    ("{type: float_sparse, sparse_ratio: -0.1}", ["spec.process[0].sparse_ratio"]),
    ("{type: float_sparse, ratio: 0.3}", ["spec.process[0].ratio", "unknown field"]),
    (f"{{type: sparse_quant, qconfig: {W8A8_DYNAMIC}}}", ["spec.process[0]", "W8A8 pair", "W8A8_DYNAMIC"]),
    (f"{{type: sparse_quant, qconfig: {W8A8_GPTQ}}}", ["spec.process[0]", "weight.method", "gptq"]),
    ("{type: sparse_quant}", ["spec.process[0].qconfig", "required"]),
])
def test_bad_fields_are_named(process, needles):
    assert_config_error(process, *needles)


def test_defaults_and_exports():
    config = parse_process_item("{type: float_sparse}")
    assert (config.sparse_ratio, config.include, config.exclude) == (0.3, [], [])
    assert config.name_filter()("model.layers.0.mlp.up_proj")  # empty include selects every linear
    assert config.export_types() == {"W16A16S"}
    assert parse_process_item(f"{{type: sparse_quant, qconfig: {W8A8_STATIC}}}").export_types() == {"W8A8S"}


def test_both_need_data_and_refuse_data_parallel_runs():
    sparse = FloatSparseConfig()
    quant = parse_process_item(f"{{type: sparse_quant, qconfig: {W8A8_STATIC}}}")
    assert isinstance(quant, SparseQuantConfig)
    assert FloatSparseProcessor.needs_data(sparse) and SparseQuantProcessor.needs_data(quant)
    assert not FloatSparseProcessor.supports_distributed(sparse)
    assert not SparseQuantProcessor.supports_distributed(quant)


def test_a_multi_device_run_is_refused_before_any_work(tiny_models, small_calib, tmp_path):
    from tests.runners.test_data_parallel import quant, write_config

    process = ("    - {type: float_sparse}\n"
               f"    - {{type: sparse_quant, qconfig: {W8A8_STATIC}}}\n"
               "    - {type: autoround_quant, strategies: [{qconfig: {weight: "
               "{scope: per_channel, dtype: int8, symmetric: true, method: autoround}}}]}\n")
    config = write_config(tmp_path, "sparse", process, small_calib)
    # W16A16S and W8A8S are MindIE formats (vLLM-Ascend's main path would refuse them first)
    result = quant(tiny_models("qwen2"), tmp_path / "out", config, "cpu:0,1", extra=("--tag", "MindIE"))
    assert result.returncode == 1
    assert "autoround_quant, float_sparse, sparse_quant cannot run data-parallel" in result.stderr
    assert "Traceback" not in result.stderr and "Starting" not in result.stderr
