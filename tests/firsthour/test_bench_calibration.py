"""tools/bench_calibration.py's two-pass floor: what a smoothing practice's statistics pass must compute (each
layer up to its last linear) and the calibration pass after it (every layer but the last in full)."""

import itertools
import json

import pytest
import torch

import tools.bench_calibration as bench
from tests.tiny_models import make_tiny_model
from tools.bench_calibration import LayerClock, float_forward

@pytest.fixture
def ticking_clock(monkeypatch):
    """CPU seconds that advance by exactly 1 at each reading, so the clock's arithmetic is checked exactly."""
    ticks = itertools.count()
    monkeypatch.setattr(bench, "cpu_seconds", lambda: float(next(ticks)))


TEXTS = ["def add(a, b):\n    return a + b\n" * 6, "The quick brown fox jumps over the lazy dog. " * 8]


def test_layer_clock_stops_the_prefix_at_each_layers_last_linear(tmp_path, ticking_clock):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path / "m"), dtype=torch.float32).eval()
    layers = model.model.layers
    clock = LayerClock(layers)
    seen: list[str] = []
    names = {module: name for name, module in model.named_modules()}
    for layer in layers:  # recorded in call order next to the clock's own hooks
        layer.mlp.down_proj.register_forward_pre_hook(lambda m, _a: seen.append(names[m]))
    with torch.no_grad():
        model(input_ids=torch.arange(64)[None] % 100, use_cache=False)
    assert seen == [f"model.layers.{i}.mlp.down_proj" for i in range(len(layers))]
    # one reading when a layer starts, one at its last linear, one when it returns: 1 tick to each
    assert clock.prefix == [1.0] * len(layers) and clock.whole == [2.0] * len(layers)
    clock.reset()
    assert clock.whole == [0.0] * len(layers) and clock.prefix == [0.0] * len(layers)
    with torch.no_grad():  # the hooks still feed the same (reset) lists
        model(input_ids=torch.arange(64)[None] % 100, use_cache=False)
    assert clock.prefix == [1.0] * len(layers) and clock.whole == [2.0] * len(layers)
    clock.remove()
    with torch.no_grad():
        model(input_ids=torch.arange(8)[None], use_cache=False)
    assert clock.whole == [2.0] * len(layers)  # removed: nothing more recorded
    assert len(seen) == 3 * len(layers)


def test_floor_is_every_prefix_plus_every_layer_but_the_last(tmp_path, ticking_clock):
    model_dir = make_tiny_model(tmp_path / "m")
    layers = len(json.loads((model_dir / "config.json").read_text())["layer_types"])
    whole, decoder, floor, tokens = float_forward(str(model_dir), TEXTS)
    assert tokens > 100
    # per sample and layer: 1 tick to the last linear, 2 in all; the whole model adds the readings around it
    assert decoder == 2 * layers * len(TEXTS)
    assert floor == (layers + 2 * (layers - 1)) * len(TEXTS)
    assert whole == 3 * layers * len(TEXTS) + 1
