"""Activation outliers: W8A8 static per-tensor loses badly, every smoothing processor recovers it.

The model (tools/bench_smoothing.py) has 3 hidden channels ×50 at both norms and ÷50 in the linears that
read them, so the float function is unchanged. Each pipeline runs through `msmodelslim quant` and the
saved checkpoint is reloaded with the reference runtime.
"""

from __future__ import annotations

from tools.bench_smoothing import REPO, bench

MIN_REDUCTION = 8.0
#: Enough calibration text that static ranges hold on unseen text (4 one-line samples are not).
CALIB_SAMPLES = 12


def test_each_smoothing_processor_cuts_the_w8a8_static_error(tmp_path, cli_env, capsys):
    calib = tmp_path / "calib.jsonl"
    calib.write_text("".join((REPO / "calib" / "mix_calib.jsonl").read_text(encoding="utf-8").splitlines(True)[:CALIB_SAMPLES]),
                     encoding="utf-8")
    errors = bench(calib, tmp_path)
    baseline = errors.pop("none")
    with capsys.disabled():
        print(f"\nW8A8 static logit error without smoothing: {baseline:.4f}; reduction factors: "
              + ", ".join(f"{name} {baseline / error:.1f}x" for name, error in errors.items()))
    assert baseline > 0.1  # the outliers really hurt plain per-tensor activations
    for name, error in errors.items():
        assert baseline / error > MIN_REDUCTION, f"{name}: {error:.4f} vs {baseline:.4f}"
