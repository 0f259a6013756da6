"""A smoothed-then-quantized checkpoint reloads through the reference runtime and tracks the float model.

With `symmetric: false` the shift gives norms and bias-free linears a bias: they are saved as FLOAT
`<module>.bias` tensors and the reference runtime gives the modules a bias to load them into.
"""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.reference_runtime import load_quantized_model
from tests.quant_runs import DYNAMIC_ACT, STATIC_ACT, WEIGHT_SYM
from tests.smoothing._helpers import context_for, logits, relative_error

CONFIG = f"""\
apiversion: modelslim_v1
spec:
  runner: layer_wise
  process:
{{smoothing}}
    - type: group
      configs:
        - {{type: linear_quant, qconfig: {{act: {STATIC_ACT}, weight: {WEIGHT_SYM}}}, include: ["*self_attn*"]}}
        - {{type: linear_quant, qconfig: {{act: {DYNAMIC_ACT}, weight: {WEIGHT_SYM}}}, include: ["*mlp*"]}}
  save: [{{type: ascendv1_saver, part_file_size: 0}}]
  dataset: {{dataset}}
"""


def _quantize(model_dir, tmp_path, calib, symmetric: bool | None):
    """W8A8 (static attention, dynamic MLP) after iter_smooth (None: without smoothing)."""
    smoothing = "" if symmetric is None else f"    - {{type: iter_smooth, symmetric: {str(symmetric).lower()}}}"
    config = tmp_path / f"sym-{symmetric}.yaml"
    config.write_text(CONFIG.replace("{smoothing}", smoothing).replace("{dataset}", str(calib)))
    out = tmp_path / f"out-{symmetric}"
    run_quant(QuantArgs(str(model_dir), str(out), "Llama-3-8B", config_path=str(config), device="cpu"))
    return out, json.loads((out / "quant_model_description.json").read_text())


def test_shifted_smoothing_checkpoint_reloads_and_tracks_the_float_model(tiny_models, small_calib, tmp_path, cli_env):
    model_dir = tiny_models("llama", torch.float32)
    adapter = context_for(model_dir, "llama").adapter
    reference = logits(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32), adapter)
    plain, _ = _quantize(model_dir, tmp_path, small_calib, None)
    baseline = relative_error(logits(load_quantized_model(model_dir, plain), adapter), reference)
    errors = {}
    for symmetric in (True, False):
        out, description = _quantize(model_dir, tmp_path, small_calib, symmetric)
        # (W8A8 static layers always carry a `bias`; the W8A8_DYNAMIC MLP and the norms only when shifted)
        added = {"model.layers.0.input_layernorm.bias", "model.layers.1.post_attention_layernorm.bias",
                 "model.layers.1.mlp.up_proj.bias", "model.layers.0.mlp.gate_proj.bias"}
        assert added <= set(description) if not symmetric else not added & set(description)
        if not symmetric:
            assert {description[name] for name in added} == {"FLOAT"}
            assert description["model.layers.1.mlp.up_proj.weight"] == "W8A8_DYNAMIC"
        errors[symmetric] = relative_error(logits(load_quantized_model(model_dir, out), adapter), reference)
    # The shift only moves values between norm, biases and weights: the shifted checkpoint must track the
    # float model as well as the unshifted one (a lost or misplaced bias would be far off). On this random
    # model α = 0.9 smoothing of v→o makes o_proj's weight columns uneven, which costs some accuracy.
    assert errors[False] < 1.5 * errors[True] and errors[True] < 5 * baseline, (errors, baseline)
