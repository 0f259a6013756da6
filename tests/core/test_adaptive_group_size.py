"""`ext.group_size: auto`: one group size per run, the largest of 128/64/32 dividing every quantized input dim."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from pydantic import ValidationError

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.errors import ConfigError
from modelslim_core.processors.autoround_quant import AutoRoundQConfig
from modelslim_core.protocol.qconfig import LinearQConfig
from modelslim_core.quant.schemes import adaptive_group_size
from tests.tiny_models import make_tiny_model

AUTO_W4 = {"dtype": "int4", "scope": "per_group", "symmetric": True, "method": "gptq", "ext": {"group_size": "auto"}}


@pytest.mark.parametrize(("dims", "expected"), [
    ({4096, 11008}, 128), ({576, 1536}, 64), ({96, 192}, 32), ({72, 144}, None), (set(), 128)])
def test_the_largest_candidate_dividing_every_input_dim_is_chosen(dims, expected):
    assert adaptive_group_size(dims) == expected


def test_auto_is_a_valid_linear_quant_group_size_but_not_an_autoround_one():
    LinearQConfig.model_validate({"weight": AUTO_W4})
    with pytest.raises(ValidationError, match="'auto'"):
        LinearQConfig.model_validate({"weight": {**AUTO_W4, "ext": {"group_size": "automatic"}}})
    with pytest.raises(ValidationError, match="must be an integer here"):
        AutoRoundQConfig.model_validate({"weight": {**AUTO_W4, "method": "autoround"}})


def test_w4a16_practice_adapts_its_group_size_to_the_model_and_says_so(tmp_path, cli_env, caplog):
    model = make_tiny_model(tmp_path / "model", "qwen2", torch.float32, hidden_size=96, intermediate_size=192)
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO, logger="modelslim_core"):
        run_quant(QuantArgs(str(model), str(out), "Qwen2-demo", quant_type="w4a16", device="cpu", yes=True))
    (group,) = json.loads((out / "config.json").read_text())["quantization_config"]["config_groups"].values()
    assert group["weights"]["strategy"] == "group" and group["weights"]["group_size"] == 32
    assert "group_size: auto -> 32" in caplog.text.replace(".group_size: auto", "group_size: auto")
    assert "96, 192" in caplog.text


def test_auto_group_size_that_fits_no_layer_is_refused_before_calibration(tmp_path, cli_env, small_calib):
    model = make_tiny_model(tmp_path / "model", "qwen2", torch.float32, hidden_size=72, intermediate_size=144)
    config = tmp_path / "auto.yaml"
    config.write_text(f"""\
apiversion: modelslim_v1
spec:
  process:
    - type: linear_quant
      qconfig: {{weight: {json.dumps(AUTO_W4)}}}
  save: [{{type: compressed_tensors_saver}}]
  dataset: {small_calib}
""")
    with pytest.raises(ConfigError, match="none of 128, 64, 32 divides") as error:
        run_quant(QuantArgs(str(model), str(tmp_path / "out"), "Qwen2-demo", config_path=str(config), device="cpu"))
    assert "72, 144" in error.value.message and "qconfig.weight.ext.group_size" in error.value.message
