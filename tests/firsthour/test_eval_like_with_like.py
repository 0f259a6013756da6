"""`msmodelslim eval` compares each saved kernel with its float original in the kernel's own basis: after
smoothing (scales folded into norms and neighbouring linears) and after QuaRot (rotated residual stream,
online rotations), an int8 layer's error is the quantization's, not the change of basis."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelslim.app.evaluate import EvalArgs, run_eval
from modelslim.app.eval_data import GENERAL_HELDOUT, default_dataset, out_of_domain
from modelslim.app.eval_report import format_table
from modelslim.app.quick_quant import QuantArgs, run_quant
from tests.quant_runs import DYNAMIC_ACT, ONLINE_ROTATIONS_TARGET, STATIC_ACT, WEIGHT_SYM

pytestmark = pytest.mark.usefixtures("cli_env")
REPO = Path(__file__).resolve().parents[2]

CONFIG = """\
apiversion: modelslim_v1
spec:
  process:
{process}  save: [{{type: ascendv1_saver, part_file_size: 0}}]
  dataset: {dataset}
"""
SMOOTHED = (
    "    - {type: iter_smooth, alpha: 0.5}\n"
    f"    - {{type: linear_quant, qconfig: {{act: {STATIC_ACT}, weight: {WEIGHT_SYM}}}, include: ['*self_attn*']}}\n"
    f"    - {{type: linear_quant, qconfig: {{act: {DYNAMIC_ACT}, weight: {WEIGHT_SYM}}}, include: ['*mlp*']}}\n"
)
ROTATED = (
    "    - {type: quarot, online: true}\n"
    f"    - {{type: linear_quant, qconfig: {{act: {DYNAMIC_ACT}, weight: {WEIGHT_SYM}}}, exclude: ['lm_head']}}\n"
)


def quantize_and_eval(model: Path, tmp_path: Path, process: str, calib: Path) -> dict:
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(process=process, dataset=calib), encoding="utf-8")
    out = tmp_path / "out"
    run_quant(QuantArgs(str(model), str(out), "Qwen2-demo", config_path=str(config), device="cpu", tags=ONLINE_ROTATIONS_TARGET))
    return run_eval(EvalArgs(str(model), str(out), str(calib), "cpu", 4))


@pytest.mark.slow
@pytest.mark.parametrize("process", [SMOOTHED, ROTATED], ids=["smoothed", "rotated"])
def test_per_layer_errors_are_the_quantization_error(process: str, tiny_models, small_calib, tmp_path) -> None:
    report = quantize_and_eval(tiny_models("qwen2", torch.float32), tmp_path, process, small_calib)
    layers = report["layers"]
    assert len(layers) == 2 * 7  # every quantized linear of the two decoder layers
    worst = max(layers, key=lambda layer: layer["rel_l2"])
    assert worst["rel_l2"] < 0.1, worst  # int8 weights and activations: a few percent
    assert min(layer["cosine"] for layer in layers) > 0.99


def test_frame_fit_recovers_a_known_smoothing_and_rotation() -> None:
    """Hand-built case: a kernel that expects x·Q/s (the float weight times s, rotated) is fed exactly that."""
    from modelslim.app.layer_compare import fit_frames

    torch.manual_seed(0)
    hidden = 16
    q, _ = torch.linalg.qr(torch.randn(hidden, hidden, dtype=torch.float64))
    s = torch.rand(hidden, dtype=torch.float64) + 0.5
    float_linear = torch.nn.Linear(hidden, 8, bias=False).double()
    kernel = torch.nn.Linear(hidden, 8, bias=False).double()
    kernel.weight.data = float_linear.weight.data @ q * s  # W' = W·Q·diag(s): the same function on x·Q/s
    quant_model = torch.nn.Sequential()
    quant_model.add_module("0", kernel)

    class Feed(torch.nn.Module):
        def forward(self, x):
            return quant_model((x @ q) / s)

    samples = [{"input": torch.randn(64, hidden, dtype=torch.float64)} for _ in range(3)]
    floats = torch.nn.Sequential(float_linear)
    frames = fit_frames(_Named(floats), _Named(Feed(), quant_model), {"0": kernel}, samples, q)
    frame = frames["0"]
    x = torch.randn(5, hidden, dtype=torch.float64)
    assert torch.allclose(frame.kernel_input(x), (x @ q) / s, atol=1e-8)
    assert torch.allclose(frame.reference_output(float_linear(x)), kernel((x @ q) / s), atol=1e-8)


class _Named(torch.nn.Module):
    """Wraps a model so `model(**sample)` works and module names match across the two models."""

    def __init__(self, runner: torch.nn.Module, modules: torch.nn.Module | None = None):
        super().__init__()
        self.runner = runner
        self.inner = modules if modules is not None else runner

    def named_modules(self, *args, **kwargs):
        return self.inner.named_modules(*args, **kwargs)

    def forward(self, input):  # noqa: A002
        return self.runner(input)


def test_default_eval_text_is_the_models_own(tmp_path: Path) -> None:
    assert default_dataset(REPO / "examples" / "qwen2-demo") == "demo_heldout.jsonl"
    assert default_dataset(tmp_path) == GENERAL_HELDOUT


def test_out_of_domain_is_flagged() -> None:
    model = torch.nn.Module()
    model.config = type("Config", (), {"vocab_size": 4096})()
    assert out_of_domain(36461.18, model) and not out_of_domain(74.758, model)
    report = {"layers": [], "metric": "perplexity", "float": 36461.18, "quantized": 36000.0, "ratio": 0.99,
              "samples": 1, "tokens": 10, "model_quant_type": "W8A8", "out_of_domain": True}
    assert "this text is out of domain for the model" in format_table(report)
