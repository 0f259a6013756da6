"""Calibration holds weights in the model's dtype: each module computes in float32 only while it runs, and the
checkpoint is byte-identical to a run that holds the whole model in float32 (model-wise)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.runtime.storage import active_compute_dtype, compute_in, store, written_dtype
from modelslim_core.runtime.unit import Unit
from modelslim_runners.budget import GPTQ_WORKING_HESSIANS
from modelslim_runners.placement import LayerWisePlacement
from tests.quant_runs import checkpoint_digest


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(11, 8)
        self.norm = nn.LayerNorm(8)
        self.linear = nn.Linear(8, 6)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(self.embed(ids)))


def _pair() -> tuple[Block, Block]:
    torch.manual_seed(0)
    stored = Block().to(torch.bfloat16)
    wide = Block()
    wide.load_state_dict({k: v.float() for k, v in stored.state_dict().items()})
    return stored, wide


def test_modules_compute_in_float32_over_bf16_weights_bit_identically() -> None:
    stored, wide = _pair()
    ids = torch.tensor([[1, 4, 9, 2]])
    seen: list[torch.dtype] = []
    stored.linear.register_forward_pre_hook(lambda m, _a: seen.append(m.weight.dtype))
    with compute_in(torch.float32):
        out = stored(ids)
    assert out.dtype == torch.float32 and torch.equal(out, wide(ids))
    assert seen == [torch.float32]  # float32 while the linear runs ...
    assert {p.dtype for p in stored.parameters()} == {torch.bfloat16}  # ... and stored as bf16 again after
    assert active_compute_dtype() is None


def test_a_forward_cut_short_still_puts_the_stored_weights_back() -> None:
    stored, _ = _pair()

    class Stop(Exception):
        pass

    def stop(_module: nn.Module, _args: tuple, _output: torch.Tensor) -> None:
        raise Stop

    stored.norm.register_forward_hook(stop)
    with compute_in(torch.float32), pytest.raises(Stop):
        stored(torch.tensor([[1, 2]]))
    assert {p.dtype for p in stored.parameters()} == {torch.bfloat16}


def test_rewritten_weights_are_promoted_only_while_computing_in_a_wider_dtype() -> None:
    param = nn.Parameter(torch.ones(3, dtype=torch.bfloat16), requires_grad=False)
    third = torch.full((3,), 1 / 3)
    with compute_in(torch.float32):
        assert written_dtype(param) == torch.float32
        store(param, third)
    assert param.dtype == torch.float32 and torch.equal(param, third)  # not rounded to bf16
    other = nn.Parameter(torch.ones(3, dtype=torch.bfloat16), requires_grad=False)
    store(other, third)  # outside: the parameter keeps its dtype (devices computing in the model's dtype)
    assert other.dtype == torch.bfloat16


REPO = Path(__file__).resolve().parents[2]
#: The shipped practices (iter_smooth + static/dynamic W8A8; GPTQ W4A16), with the runner and dataset of the test.
W8A8_PRACTICE = REPO / "practices" / "qwen2" / "qwen2-w8a8.yaml"
W4A16_GPTQ = REPO / "practices" / "default" / "default-w4a16.yaml"


def practice_config(practice: Path, runner: str, dataset: Path) -> str:
    text = practice.read_text().replace("runner: auto", f"runner: {runner}")
    assert f"runner: {runner}" in text and "dataset: mix_calib.jsonl" in text
    return text.replace("dataset: mix_calib.jsonl", f"dataset: {dataset}")


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> list[set[torch.dtype]]:
    """The dtypes of every unit's materialised parameters, as the layer-wise placement entered it."""
    seen: list[set[torch.dtype]] = []
    original_enter = LayerWisePlacement.enter

    def enter(self: LayerWisePlacement, unit: Unit, dtype: torch.dtype | None = None) -> None:
        original_enter(self, unit, dtype)
        seen.append({p.dtype for p in unit.module.parameters() if not p.is_meta})

    monkeypatch.setattr(LayerWisePlacement, "enter", enter)
    return seen


@pytest.mark.parametrize("practice", [W8A8_PRACTICE, W4A16_GPTQ], ids=["w8a8-practice", "w4a16-gptq"])
def test_layer_wise_in_bf16_storage_writes_the_float32_run_checkpoint(practice: Path, tiny_models, small_calib: Path,
                                                                     tmp_path: Path, cli_env,
                                                                     held: list[set[torch.dtype]]) -> None:
    model = tiny_models("qwen2", torch.bfloat16)
    digests = []
    for runner in ("model_wise", "layer_wise"):
        path = tmp_path / f"{runner}.yaml"
        path.write_text(practice_config(practice, runner, small_calib))
        out = tmp_path / runner
        run_quant(QuantArgs(str(model), str(out), "Qwen2.5-7B-Instruct", config_path=str(path), device="cpu"))
        digests.append({k: v for k, v in checkpoint_digest(out).items() if not k.endswith("_best_practice.yaml")})
    assert digests[0] == digests[1]
    assert held and all(dtypes == {torch.bfloat16} for dtypes in held)  # every unit was held in bf16


def test_plan_counts_bf16_storage_the_running_linear_and_gptq_hessians(tiny_models, small_calib: Path, tmp_path: Path,
                                                                      cli_env) -> None:
    from safetensors import safe_open

    model = tiny_models("qwen2", torch.bfloat16)
    with safe_open(str(next(model.glob("*.safetensors"))), framework="pt") as handle:
        shapes = [tuple(handle.get_slice(k).get_shape()) for k in handle.keys()
                  if k.startswith("model.layers.0.") and k.endswith("_proj.weight")]
        unit_elements = sum(math.prod(handle.get_slice(k).get_shape()) for k in handle.keys()
                            if k.startswith("model.layers.0."))
    plans = {}
    float32_model = tiny_models("qwen2", torch.float32)  # held as computed: the plan counts float32 3x
    for name, practice, source in (("w8a8", W8A8_PRACTICE, model), ("gptq", W4A16_GPTQ, model),
                                   ("w8a8-float32", W8A8_PRACTICE, float32_model)):
        path = tmp_path / f"{name}.yaml"
        path.write_text(practice_config(practice, "layer_wise", small_calib))
        out = tmp_path / name
        run_quant(QuantArgs(str(source), str(out), "Qwen2.5-7B-Instruct", config_path=str(path), device="cpu",
                            max_memory=64 * 2**30))
        memory = json.loads((out / "quant_report.json").read_text())["stages"][-1]["memory"]
        plans[name] = memory["pieces"]["(whole unit)"]["plan_bytes"]
    # GPTQ: every Hessian, plus the widest one's working set while it is factorised.
    hessians = 4 * (sum(inp * inp for _, inp in shapes) + GPTQ_WORKING_HESSIANS * max(inp * inp for _, inp in shapes))
    # Same activations; the w8a8 practice smooths (its rewritten weights are promoted: 2 x 2 bytes stored per
    # weight), GPTQ does not (2 bytes): both add 1 byte of codes and the running linear's two float32 copies.
    assert plans["gptq"] - plans["w8a8"] == hessians - 2 * unit_elements
    running = 2 * max(out * inp for out, inp in shapes) * 4
    # float32 storage counts 3 x 4 bytes per weight.
    assert plans["w8a8-float32"] - plans["w8a8"] == 3 * unit_elements * 4 - (2 * 2 * unit_elements + unit_elements + running)


def test_a_processor_that_does_not_accept_stored_weights_gets_float32_units(tiny_models, small_calib: Path,
                                                                          tmp_path: Path, cli_env,
                                                                          held: list[set[torch.dtype]],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Plugins edit `weight.data` in place (the default `handles_stored_weights` is False): units stay float32."""
    from modelslim_core.processors.linear_quant import LinearQuantProcessor

    monkeypatch.setattr(LinearQuantProcessor, "handles_stored_weights", classmethod(lambda cls, config: False))
    config = tmp_path / "c.yaml"
    config.write_text(practice_config(W8A8_PRACTICE, "layer_wise", small_calib))
    run_quant(QuantArgs(str(tiny_models("qwen2")), str(tmp_path / "out"), "Qwen2.5-7B-Instruct",
                        config_path=str(config), device="cpu"))
    assert held and all(dtypes == {torch.float32} for dtypes in held)
