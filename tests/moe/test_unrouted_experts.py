"""An expert the router never selects is still calibrated (all-token calibration) and the run says so."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.moe._helpers import quantize, relative_logit_error, saved, static_w8a8_config

DEAD = [2, 3]  # one whole routing group (n_group=2, topk_group=1)


def with_dead_expert(source: Path, target: Path) -> Path:
    """A copy of a DeepSeek-V3 checkpoint whose routers can never choose the DEAD experts (routing bias -100)."""
    shutil.copytree(source, target)
    tensors = load_file(target / "model.safetensors")
    for name in tensors:
        if name.endswith("mlp.gate.e_score_correction_bias"):
            tensors[name][DEAD] = -100.0  # sigmoid scores are in [0, 1]: the bias alone decides
    save_file(tensors, target / "model.safetensors", metadata={"format": "pt"})
    return target


@pytest.mark.parametrize("runner", ["model_wise", "layer_wise"])
def test_an_expert_never_routed_is_calibrated_on_all_tokens_and_reported(tiny_models, tmp_path, caplog, runner):
    model = with_dead_expert(tiny_models("deepseek_v3", torch.bfloat16), tmp_path / "model")
    dataset = tmp_path / "calib.jsonl"
    dataset.write_text('{"text": "Every expert must see tokens, even the one the router ignores."}\n')
    config = tmp_path / "static-experts.yaml"
    config.write_text(static_w8a8_config("*mlp.experts.*", runner, dataset))
    caplog.set_level(logging.INFO)
    out = quantize(model, tmp_path / "out", "DeepSeek-V3", config)  # static experts: no data would be an error
    for layer in (1, 2):
        prefix = f"model.layers.{layer}.mlp.experts"
        assert f"{prefix}: experts {DEAD} received no routed tokens; they were calibrated on all" in caplog.text
        assert f"{prefix}: 21 tokens, routed tokens per expert {{0:21, 1:21, 2:0, 3:0}}" in caplog.text
        weights = load_file(out / "quant_model_weights.safetensors")
        # gate/up of every expert see the same (all) tokens, so their static input ranges are identical
        scales = [weights[f"{prefix}.{e}.gate_proj.input_scale"] for e in range(4)]
        assert all(torch.equal(scales[0], s) for s in scales) and float(scales[0]) > 0
        down = weights[f"{prefix}.{DEAD[-1]}.down_proj.input_scale"]
        assert torch.isfinite(down).all() and float(down) > 0
    assert saved(out)[0][f"model.layers.1.mlp.experts.{DEAD[-1]}.down_proj.weight"] == "W8A8"
    assert relative_logit_error(model, out, torch.arange(3, 40).reshape(1, -1)) < 0.05


def test_without_all_token_calibration_an_unrouted_expert_is_an_error_not_garbage(tiny_models, tmp_path, monkeypatch):
    """What all-token calibration prevents: a static expert with no tokens has no range, and the run refuses."""
    from modelslim_core.errors import DatasetError
    from modelslim_core.models.moe import PerExpertMoE

    monkeypatch.setattr(PerExpertMoE, "_all_tokens_now", lambda self: False)
    model = with_dead_expert(tiny_models("deepseek_v3", torch.bfloat16), tmp_path / "model")
    dataset = tmp_path / "calib.jsonl"
    dataset.write_text('{"text": "Only routed tokens this time."}\n')
    config = tmp_path / "static-experts.yaml"
    config.write_text(static_w8a8_config("*mlp.experts.*", "model_wise", dataset))
    with pytest.raises(DatasetError, match=r"model.layers.1.mlp.experts.2.gate_proj received no calibration data"):
        quantize(model, tmp_path / "out", "DeepSeek-V3", config)
