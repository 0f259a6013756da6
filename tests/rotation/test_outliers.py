"""Outlier channels ×50 at the norms (÷50 in the readers, function unchanged) ruin W8A8 static per-tensor
activations; QuaRot first must cut the reloaded checkpoint's logits error by a large factor."""

from __future__ import annotations

import importlib.util

import torch

from tests.tiny_models import REPO, make_tiny_model

spec = importlib.util.spec_from_file_location("bench_rotation", REPO / "tools" / "bench_rotation.py")
bench_rotation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_rotation)


def test_quarot_cuts_w8a8_error_with_norm_outliers(tmp_path, cli_env):
    model_dir = make_tiny_model(tmp_path / "float", "qwen2", torch.float32)
    row = bench_rotation.measure(model_dir, tmp_path / "work", "norm")
    assert row["w8a8"] > 0.05  # the outliers really hurt
    assert row["factor"] > 5, row
