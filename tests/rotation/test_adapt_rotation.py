"""adapt_rotation: the learned refinement is orthogonal and quantizes better; stage 1 (prior) → stage 2 keeps
the function; each stage accepts only its own fields and place."""

from __future__ import annotations

import json

import pytest
import torch

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.errors import ConfigError
from modelslim_core.reference_runtime import load_quantized_model
from modelslim_core.rotation.adapt import fake_quant_rows, optimize_rotation, polar_factor, quant_loss
from modelslim_core.rotation.hadamard import random_hadamard
from tests.rotation._helpers import load, logits, relative_error
from tests.tiny_models import make_tiny_model
from tests.quant_runs import ONLINE_ROTATIONS_TARGET


def outlier_rows(rows: int, hidden: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(rows, hidden, generator=generator, dtype=torch.float64)
    a[:, [3, 9]] *= 30
    return a


def test_fake_quant_rows_hand_case():
    p = torch.tensor([[7.0, -3.5, 0.2], [0.0, 0.0, 0.0]], dtype=torch.float64)
    # int4: scale = 7/7 = 1 -> codes 7, -4 (half to even of -3.5), 0; the zero row keeps scale floor 1e-5
    assert torch.equal(fake_quant_rows(p, "int4"), torch.tensor([[7.0, -4.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("rows", [256, 8])  # 8 rows < 64 channels: PᵀB is rank-deficient
def test_learned_rotation_is_orthogonal_and_quantizes_better(rows):
    a = outlier_rows(rows)
    q = random_hadamard(64)
    learned = optimize_rotation(a, q, steps=20, quant_dtype="int4")
    assert torch.allclose(learned @ learned.T, torch.eye(64, dtype=torch.float64), atol=1e-10)
    assert quant_loss(a @ learned, "int4") < quant_loss(a @ q, "int4")


def test_polar_factor_of_rank_deficient_matrix_is_orthogonal():
    c = torch.zeros(4, 4, dtype=torch.float64)
    c[0, 1] = 2.0  # rank 1: Newton–Schulz would return a rank-1 partial isometry
    r = polar_factor(c)
    assert torch.allclose(r @ r.T, torch.eye(4, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(r[0], torch.tensor([0.0, 1.0, 0.0, 0.0], dtype=torch.float64))


def adapt_config(dataset, runner: str, stage1: str = "", stage2: str = "", quant: str = "") -> str:
    return f"""\
apiversion: modelslim_v1
spec:
  runner: {runner}
  prior:
    - process:
        - {{type: adapt_rotation, stage: 1, steps: 5, quant_dtype: int4{stage1}}}
  process:
    - {{type: adapt_rotation, stage: 2{stage2}}}
{quant}  save: [{{type: ascendv1_saver, part_file_size: 0}}]
  dataset: {dataset}
"""


@pytest.mark.parametrize("arch, runner", [("qwen2", "layer_wise"), ("qwen3", "model_wise"), ("llama", "layer_wise")])
def test_adapt_rotation_keeps_logits(tmp_path, small_calib, cli_env, arch, runner, caplog):
    model_dir = make_tiny_model(tmp_path / "float", arch, torch.float32, tie_word_embeddings=arch == "qwen2")
    config = tmp_path / "adapt.yaml"
    config.write_text(adapt_config(small_calib, runner, stage2=", online: true, max_tp_size: 2, down_proj_online_layers: [0]"))
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        run_quant(QuantArgs(str(model_dir), str(out), "Qwen2-demo", config_path=str(config), device="cpu", tags=ONLINE_ROTATIONS_TARGET))
    assert "after refinement" in caplog.text and "plain QuaRot" not in caplog.text
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["optional"] == {}  # stage 2 does not export the global rotation
    assert description["metadata"]["quarot"]["kronecker_rotation"]["layers"] == ["model.layers.0.mlp.down_proj"]
    expected = logits(load(model_dir))
    assert relative_error(logits(load_quantized_model(model_dir, out)), expected) < 1e-4


def test_stage_two_without_stage_one_warns_and_uses_quarot(tmp_path, small_calib, cli_env, caplog, tiny_models):
    config = tmp_path / "adapt.yaml"
    config.write_text(adapt_config(small_calib, "model_wise").replace(
        "  prior:\n    - process:\n        - {type: adapt_rotation, stage: 1, steps: 5, quant_dtype: int4}\n", ""))
    run_quant(QuantArgs(str(tiny_models("qwen2")), str(tmp_path / "out"), "Qwen2-demo", config_path=str(config), device="cpu"))
    assert "applying plain QuaRot" in caplog.text


@pytest.mark.parametrize("stage1, stage2, message", [
    (", online: true", "", r"prior\[0\]\.process\[0\]\.online: unknown field"),
    ("", ", steps: 3", r"process\[0\]\.steps: unknown field"),
    ("", ", export_extra_info: true", r"process\[0\]\.export_extra_info: unknown field"),
    (", steps: 0", "", r"steps"),
    ("", ", max_tp_size: 3", r"max_tp_size"),
    ("", ", max_tp_size: 128", r"max_tp_size"),
])
def test_stage_fields_are_checked(tmp_path, small_calib, cli_env, tiny_models, stage1, stage2, message):
    config = tmp_path / "adapt.yaml"
    config.write_text(adapt_config(small_calib, "model_wise", stage1, stage2))
    with pytest.raises(ConfigError, match=message):
        run_quant(QuantArgs(str(tiny_models("qwen2")), str(tmp_path / "out"), "Qwen2-demo", config_path=str(config), device="cpu"))


def test_stage_one_outside_prior_is_refused(tmp_path, small_calib, cli_env, tiny_models):
    config = tmp_path / "adapt.yaml"
    config.write_text(adapt_config(small_calib, "model_wise").replace("{type: adapt_rotation, stage: 2}", "{type: adapt_rotation, stage: 1}"))
    with pytest.raises(ConfigError, match="must be listed under spec.prior"):
        run_quant(QuantArgs(str(tiny_models("qwen2")), str(tmp_path / "out"), "Qwen2-demo", config_path=str(config), device="cpu"))


LAOS_QUANT = """\
    - type: autoround_quant
      iters: 4
      strategies:
        - qconfig:
            act: {scope: per_token, dtype: int4, symmetric: true, method: minmax}
            weight: {scope: per_channel, dtype: int4, symmetric: true, method: autoround}
          include: ["*"]
"""


def test_laos_pipeline_rotation_then_autoround_reloads(tmp_path, small_calib, cli_env):
    """The reference's LAOS W4A4 pipeline: learned rotation (prior stage 1, stage 2 with online rotations), then
    AutoRound W4A4_DYNAMIC; the online rotations must survive AutoRound replacing the linears."""
    model_dir = make_tiny_model(tmp_path / "float", "qwen2", torch.float32)
    config = tmp_path / "laos.yaml"
    config.write_text(adapt_config(small_calib, "layer_wise", quant=LAOS_QUANT,
                                   stage2=", online: true, max_tp_size: 2, down_proj_online_layers: [0]"))
    out = tmp_path / "out"
    run_quant(QuantArgs(str(model_dir), str(out), "Qwen2-demo", config_path=str(config), device="cpu", tags=ONLINE_ROTATIONS_TARGET))
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["model.layers.0.mlp.down_proj.weight"] == "W4A4_DYNAMIC"
    assert description["metadata"]["quarot"]["kronecker_rotation"]["layers"] == ["model.layers.0.mlp.down_proj"]
    expected = logits(load(model_dir))
    assert relative_error(logits(load_quantized_model(model_dir, out)), expected) < 0.25  # measured 0.157 (W4A4)
