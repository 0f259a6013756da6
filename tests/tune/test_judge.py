"""Tune's perplexity judge: the figures `msmodelslim eval` reports, at the cost of one quantized forward per
round once the float perplexity is known (no per-layer errors, no float model)."""

from __future__ import annotations

import pytest

from modelslim.app import evaluate
from modelslim.app.evaluators import PerplexityEvaluator
from modelslim.app.quick_quant import QuantArgs, run_quant
from tests.tune._helpers import make_outlier_model, w8a8_config, write_calib, write_config

pytestmark = pytest.mark.usefixtures("cli_env")


def test_judge_matches_eval_and_computes_the_float_perplexity_once(tmp_path, monkeypatch):
    model = make_outlier_model(tmp_path / "model")
    calib = write_calib(tmp_path / "calib.jsonl")
    out = tmp_path / "out"
    run_quant(QuantArgs(str(model), str(out), "Llama-demo", config_path=str(write_config(tmp_path / "c.yaml",
                                                                                       w8a8_config(calib))), device="cpu"))
    full = evaluate.run_eval(evaluate.EvalArgs(str(model), str(out), str(calib), "cpu"))
    judge = PerplexityEvaluator.from_config({"type": "perplexity", "dataset": str(calib), "max_ratio": 1.5}, "evaluation")
    first = judge.evaluate(model, out, tmp_path)
    assert first.passed and first.details["float"] == pytest.approx(full["float"], rel=1e-9)
    assert first.details["quantized"] == pytest.approx(full["quantized"], rel=1e-9)

    def no_float_model(*_args, **_kwargs):
        raise AssertionError("the float model is loaded again")

    monkeypatch.setattr(evaluate, "_load_float", no_float_model)
    again = judge.evaluate(model, out, tmp_path)
    assert again.metric == pytest.approx(first.metric, rel=1e-12) and again.details == first.details
    other = PerplexityEvaluator.from_config({"type": "perplexity", "dataset": str(calib), "max_ratio": 1.5,
                                             "max_samples": 2}, "evaluation")
    other._float = judge._float  # a float figure of other samples is not reused
    with pytest.raises(AssertionError, match="loaded again"):
        other.evaluate(model, out, tmp_path)
