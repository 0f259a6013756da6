"""A processor whose forward only feeds statistics hooks (smoothing) or calibrating linears (linear_quant) stops
each sample's forward once those modules have recorded, when nobody uses that forward's outputs; the checkpoint
does not change."""

from __future__ import annotations

from modelslim_core.smoothing.processor_base import SmoothingProcessor
from tests.quant_runs import DYNAMIC_ACT, STATIC_ACT, WEIGHT_SYM, checkpoint_digest
from tests.runners.test_data_parallel import quant, write_config

SMOOTH_THEN_STATIC = f"""\
    - {{type: iter_smooth, alpha: 0.5, enable_subgraph_type: [norm-linear]}}
    - {{type: linear_quant, qconfig: {{act: {STATIC_ACT}, weight: {WEIGHT_SYM}}}, include: ["*"]}}
"""


def run_counting_mlp_activations(model, out, config, monkeypatch) -> int:
    """Run the quantization; how many times an MLP activation ran (once per sample and layer that got past
    gate_proj)."""
    from modelslim_core.models.qwen2_native import SiLUActivation  # tiny Qwen2 models load with our own module

    from modelslim.app.quick_quant import QuantArgs, run_quant

    calls = []
    original = SiLUActivation.forward
    monkeypatch.setattr(SiLUActivation, "forward", lambda self, x: calls.append(1) or original(self, x))
    run_quant(QuantArgs(str(model), str(out), "Qwen2-demo", config_path=str(config), device="cpu"))
    return len(calls)


def test_smoothing_forward_stops_after_its_statistics_and_the_checkpoint_is_unchanged(
        tiny_models, small_calib, tmp_path, monkeypatch, cli_env):
    model = tiny_models("qwen2")
    config = write_config(tmp_path, "sq", SMOOTH_THEN_STATIC, small_calib, runner="model_wise")
    partial = run_counting_mlp_activations(model, tmp_path / "partial", config, monkeypatch)
    monkeypatch.setattr(SmoothingProcessor, "stops_after_statistics", False)
    full = run_counting_mlp_activations(model, tmp_path / "full", config, monkeypatch)
    samples, layers = 4, 2
    # whole forwards: smoothing + calibration (whose outputs feed the next layer) = 2 per sample and layer;
    # with the stop, the smoothing forward ends at gate_proj, the last norm consumer it records
    assert full == 2 * samples * layers and partial == samples * layers, (full, partial)
    assert checkpoint_digest(tmp_path / "partial") == checkpoint_digest(tmp_path / "full")


STATIC_ATTENTION_DYNAMIC_MLP = f"""\
    - type: group
      configs:
        - {{type: linear_quant, qconfig: {{act: {STATIC_ACT}, weight: {WEIGHT_SYM}}}, include: ["*self_attn*"]}}
        - {{type: linear_quant, qconfig: {{act: {DYNAMIC_ACT}, weight: {WEIGHT_SYM}}}, include: ["*mlp*"]}}
"""


def test_last_unit_calibration_stops_after_its_last_static_linear_and_the_checkpoint_is_unchanged(
        tiny_models, small_calib, tmp_path, monkeypatch, cli_env):
    """The last unit's outputs feed nothing: its calibration forward ends once o_proj (the last calibrating
    linear) has recorded; the dynamic MLP, quantized without data, is not run."""
    from modelslim_core.processors.linear_quant import LinearQuantProcessor

    model = tiny_models("qwen2")
    config = write_config(tmp_path, "w8a8", STATIC_ATTENTION_DYNAMIC_MLP, small_calib, runner="model_wise")
    partial = run_counting_mlp_activations(model, tmp_path / "partial", config, monkeypatch)
    monkeypatch.setattr(LinearQuantProcessor, "forward_needs_only", lambda self, unit: [])
    full = run_counting_mlp_activations(model, tmp_path / "full", config, monkeypatch)
    samples, layers = 4, 2
    assert full == samples * layers and partial == samples * (layers - 1), (full, partial)
    assert checkpoint_digest(tmp_path / "partial") == checkpoint_digest(tmp_path / "full")
