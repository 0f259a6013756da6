"""`msmodelslim eval`'s single-pass bookkeeping computes what a plain, separate computation computes.

eval reads everything off one float and one quantized forward per sample (plus, for an eval of one sample,
one float pass that stops before the output head); its per-layer figures are measured
on about LAYER_TOKENS tokens per sample (every k-th). These tests pin its outputs against straightforward
float64 code written here (hooks, a loop over samples, F.cosine_similarity, the full-logit perplexity), so a
speedup that changes a figure fails.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from modelslim.app.eval_passes import compare_models, fit_sample_count, measured_rows, sample_lengths
from modelslim.app.evaluate import _load_float, perplexity, quantized_linears
from modelslim.app.layer_compare import (FIT_MIN_TOKENS, FIT_SAMPLES, FIT_TOKENS, LAYER_TOKENS, MEASURE_TOKENS, _ErrorStats, fit_frames,
                                         forward_below_head, measured_rows_per_sample, spread_rows)
from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.reference_runtime import load_quantized_model
from tests.quant_runs import write_mixed_run

pytestmark = pytest.mark.usefixtures("cli_env")


def test_measured_tokens_are_shared_by_the_measured_samples() -> None:
    assert (LAYER_TOKENS, MEASURE_TOKENS) == (256, 2048)  # the figures below are computed by hand from these
    assert [measured_rows_per_sample(n) for n in (1, 8, 10, 40, 1000)] == [256, 256, 205, 52, 16]
    # eval of n samples: min(8, ceil(n/2)) fit the frames, the rest are measured (a one-sample eval: that one)
    assert [measured_rows([300] * n) for n in (1, 12, 18, 48)] == [256, 256, 205, 52]


def test_fit_takes_half_the_samples_unless_they_hold_too_few_tokens() -> None:
    assert (FIT_SAMPLES, FIT_TOKENS, FIT_MIN_TOKENS) == (8, 256, 1024)
    assert [fit_sample_count([300] * n) for n in (1, 2, 8, 12, 48)] == [1, 2, 4, 6, 8]
    assert fit_sample_count([700, 40, 300]) == 3  # 296 fit tokens in two: all three fit, one more pass measures
    assert fit_sample_count([30] * 20) == 8  # never more than FIT_SAMPLES: the others are measured inline
    assert fit_sample_count([100] * 20) == 8
    lengths = [300, 300, 100, 30, 500, 500, 500, 500]  # fit tokens 256, 512, 612, 642, 898, then 1154 >= 1024
    assert fit_sample_count(lengths) == 6
    assert measured_rows(lengths) == 256  # two measured samples share 2,048 tokens: at most 256 each


def test_error_stats_by_hand() -> None:
    stats = _ErrorStats("W8A8")
    stats.update(torch.tensor([[3.0, 4.0], [1.0, 0.0]]), torch.tensor([[3.0, 0.0], [1.0, 0.0]]))
    result = stats.result("x")
    assert result.rel_l2 == pytest.approx(math.sqrt(16 / 10))  # |q - r|² = 16, |r|² = 9 + 1
    assert result.cosine == pytest.approx((9 / (5 * 3) + 1) / 2)


def test_spread_rows_takes_every_kth_token() -> None:
    t = torch.arange(10.0).reshape(1, 10, 1)
    assert spread_rows(t, 4).flatten().tolist() == [0, 3, 6, 9]
    assert spread_rows(t, 10) is t and spread_rows(t, None) is t


def test_a_pass_for_hooks_stops_before_an_unquantized_head() -> None:
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.head = nn.Linear(2, 2), nn.Linear(2, 3)

        def get_output_embeddings(self):
            return self.head

        def forward(self, x):
            return self.head(self.body(x))

    model, calls = Tiny(), []
    for module in (model.body, model.head):
        module.register_forward_hook(lambda m, a, o: calls.append(m))
    forward_below_head(model, {"x": torch.ones(1, 2)}, {"body"})
    assert calls == [model.body]
    forward_below_head(model, {"x": torch.ones(1, 2)}, {"body", "head"})  # a quantized head is measured too
    assert calls[1:] == [model.body, model.head]


@pytest.fixture(scope="module")
def models(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("eval_passes")
    config = write_mixed_run(tmp, "Eval passes")  # static W8A8 attention, dynamic MLP, W8A16 down_proj
    model_dir = tiny_models("qwen2", torch.float32)
    run_quant(QuantArgs(str(model_dir), str(tmp / "out"), "Qwen2-demo", config_path=str(config), device="cpu"))
    float_model, _ = _load_float(model_dir, torch.device("cpu"))
    quant_model = load_quantized_model(model_dir, tmp / "out")
    return float_model, quant_model, quantized_linears(float_model, quant_model)


def _plain_layer_table(float_model, kernels, frames, samples, rows: int) -> dict[str, tuple[float, float]]:
    """Every kernel fed its frame's input on every k-th token, summed in float64 with F.cosine_similarity."""
    sums = {name: [0.0, 0.0, 0.0, 0] for name in kernels}
    modules = dict(float_model.named_modules())
    calls: dict[str, list] = {}
    handles = [modules[name].register_forward_hook(lambda m, a, o, name=name: calls.setdefault(name, []).append((a[0], o)))
               for name in kernels]
    try:
        for sample in samples:
            calls.clear()
            float_model(**sample)
            for name, [(x, y)] in calls.items():
                stride = -(-x.shape[1] // rows)
                x, y = x[:, ::stride], y[:, ::stride]
                q = kernels[name](frames[name].kernel_input(x)).double().flatten(0, 1)
                r = frames[name].reference_output(y).double().flatten(0, 1)
                sums[name][0] += (q - r).pow(2).sum().item()
                sums[name][1] += r.pow(2).sum().item()
                sums[name][2] += F.cosine_similarity(q, r, dim=-1).sum().item()
                sums[name][3] += r.shape[0]
    finally:
        for handle in handles:
            handle.remove()
    return {name: (math.sqrt(err / ref), cos / tokens) for name, (err, ref, cos, tokens) in sums.items()}


@pytest.mark.parametrize("count", [1, 3, 2 * FIT_SAMPLES + 2], ids=["one-sample", "short-samples-all-fit", "fit-then-inline"])
def test_eval_figures_equal_a_plain_computation(models, count: int) -> None:
    float_model, quant_model, kernels = models
    torch.manual_seed(0)
    vocab = float_model.config.vocab_size
    # long samples exercise the every-k-th-token measurement; the last one (measured: 400 tokens) the shared budget
    lengths = ([700, 40, 300] + [30] * (count - 4) + [400])[:max(count, 3)]
    samples = [{"input_ids": torch.randint(1, vocab, (1, n)), "attention_mask": torch.ones(1, n, dtype=torch.long)}
               for n in lengths[:count]]
    layers, float_ppl, quant_ppl, tokens = compare_models(
        float_model, quant_model, kernels, {f"{n}.weight": "?" for n in kernels}, samples, None, True)

    assert tokens == sum(n - 1 for n in lengths[:count])
    assert float_ppl == pytest.approx(perplexity(float_model, samples)[0], rel=1e-6)
    assert quant_ppl == pytest.approx(perplexity(quant_model, samples)[0], rel=1e-6)
    with torch.no_grad():
        fitted = fit_sample_count(sample_lengths(samples))
        assert fitted == {1: 1, 3: 3}.get(count, FIT_SAMPLES)
        frames = fit_frames(float_model, quant_model, kernels, samples[:fitted], None)
        measured = samples if fitted == count else samples[fitted:]  # fit samples are not measured twice
        plain = _plain_layer_table(float_model, kernels, frames, measured, measured_rows(sample_lengths(samples)))
    assert {layer.name for layer in layers} == set(kernels)
    for layer in layers:
        assert layer.rel_l2 == pytest.approx(plain[layer.name][0], rel=1e-5), layer.name
        assert layer.cosine == pytest.approx(plain[layer.name][1], abs=1e-6), layer.name
