"""The unit cache tune rounds share (modelslim_runners/unit_cache.py): a round that rolls a layer back reuses
the units before it and writes the checkpoint a run from scratch writes, byte for byte."""

from __future__ import annotations

import json
import logging
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch
from torch import nn

from modelslim.app import evaluators
from modelslim.app.evaluators import Verdict
from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim.app.tune import TuneArgs, run_tune
from modelslim_core.runtime.unit import UnitInput
from modelslim_runners.unit_cache import CACHE_ENV, CACHE_GIB_ENV, STATE_FILE, UNIT_FILE, UnitCache
from tests.tune._helpers import make_outlier_model, w8a8_config, write_calib, write_config

pytestmark = pytest.mark.usefixtures("cli_env")
CHECKPOINT_FILES = ("quant_model_weights.safetensors", "quant_model_description.json", "config.json")


@pytest.fixture(scope="module")
def outlier_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("unit_cache")
    return make_outlier_model(root / "model"), write_calib(root / "calib.jsonl")


def quantize(model: Path, config: dict, out: Path, cache: Path | None, monkeypatch, caplog) -> int:
    """Run quant with (or without) the unit cache; returns how many units it reused."""
    if cache is None:
        monkeypatch.delenv(CACHE_ENV, raising=False)
    else:
        monkeypatch.setenv(CACHE_ENV, str(cache))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="modelslim_runners"):
        run_quant(QuantArgs(str(model), str(out), "Llama-demo", config_path=str(write_config(out.with_suffix(".yaml"),
                                                                                         config)), device="cpu"))
    reused = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Reused the first")]
    return int(reused[0].split()[3]) if reused else 0


def smooth_gptq(calib: Path, runner: str, exclude: list[str]) -> dict:
    """smooth_quant then W8A8 with GPTQ weights: smoothing scales, activation ranges and Hessians all calibrated."""
    config = w8a8_config(calib, exclude)
    config["spec"]["runner"] = runner
    config["spec"]["process"][0]["qconfig"]["weight"]["method"] = "gptq"
    config["spec"]["process"].insert(0, {"type": "smooth_quant", "alpha": 0.5})
    return config


def same_checkpoint(a: Path, b: Path) -> None:
    for name in CHECKPOINT_FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.mark.parametrize("runner", ["model_wise", "layer_wise"])
def test_round_with_reuse_writes_the_checkpoint_of_a_round_from_scratch(outlier_model, tmp_path, monkeypatch, caplog,
                                                                       runner):
    model, calib = outlier_model
    cache = tmp_path / "cache"
    assert quantize(model, smooth_gptq(calib, runner, []), tmp_path / "none", cache, monkeypatch, caplog) == 0
    rolled_back = smooth_gptq(calib, runner, ["*model.layers.2.*"])
    assert quantize(model, rolled_back, tmp_path / "reused", cache, monkeypatch, caplog) == 2
    assert quantize(model, rolled_back, tmp_path / "scratch", None, monkeypatch, caplog) == 0
    same_checkpoint(tmp_path / "reused", tmp_path / "scratch")
    # the rolled-back round's own entries serve a later round that also rolls back layer 3
    both = smooth_gptq(calib, runner, ["*model.layers.2.*", "*model.layers.3.*"])
    assert quantize(model, both, tmp_path / "both", cache, monkeypatch, caplog) == 3
    assert quantize(model, both, tmp_path / "both_scratch", None, monkeypatch, caplog) == 0
    same_checkpoint(tmp_path / "both", tmp_path / "both_scratch")


def test_only_units_before_the_first_change_are_reused(outlier_model, tmp_path, monkeypatch, caplog):
    """Rolling back layer 0, a module outside the units or a pattern that matches nothing changes every unit's
    key; the same config again reuses every unit; a data-free scheme reuses the prefix as well."""
    model, calib = outlier_model
    cache = tmp_path / "cache"
    assert quantize(model, w8a8_config(calib), tmp_path / "first", cache, monkeypatch, caplog) == 0
    assert quantize(model, w8a8_config(calib), tmp_path / "again", cache, monkeypatch, caplog) == 4
    same_checkpoint(tmp_path / "first", tmp_path / "again")
    for name, exclude in [("layer0", ["*model.layers.0.mlp.*"]), ("outside", ["lm_head"]),
                          ("nothing", ["*no_such_module*"])]:
        assert quantize(model, w8a8_config(calib, exclude), tmp_path / name, cache, monkeypatch, caplog) == 0, name
    dynamic = w8a8_config(calib)
    dynamic["spec"]["process"][0]["qconfig"]["act"] = {"scope": "per_token", "dtype": "int8", "symmetric": True,
                                                       "method": "minmax"}
    assert quantize(model, dynamic, tmp_path / "dynamic", cache, monkeypatch, caplog) == 0
    dynamic["spec"]["process"][0]["exclude"] = ["*model.layers.3.*"]
    assert quantize(model, dynamic, tmp_path / "dynamic3", cache, monkeypatch, caplog) == 3
    assert quantize(model, dynamic, tmp_path / "dynamic3_scratch", None, monkeypatch, caplog) == 0
    same_checkpoint(tmp_path / "dynamic3", tmp_path / "dynamic3_scratch")


def test_auto_group_size_makes_every_pattern_global():
    """`group_size: auto` is chosen over every selected linear, so its patterns key every unit."""
    from modelslim_core.processors.linear_quant import LinearQuantConfig, LinearQuantProcessor

    weight = {"scope": "per_group", "dtype": "int4", "symmetric": True, "method": "minmax"}
    fixed = LinearQuantConfig.model_validate({"qconfig": {"weight": {**weight, "ext": {"group_size": 64}}}})
    auto = LinearQuantConfig.model_validate({"qconfig": {"weight": {**weight, "ext": {"group_size": "auto"}}}})
    assert LinearQuantProcessor.selection_is_local(fixed)
    assert not LinearQuantProcessor.selection_is_local(auto)


def test_cache_is_bounded_and_can_be_turned_off(outlier_model, tmp_path, monkeypatch, caplog):
    model, calib = outlier_model
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_GIB_ENV, "0")
    assert quantize(model, w8a8_config(calib), tmp_path / "off", cache, monkeypatch, caplog) == 0
    assert not cache.exists()
    monkeypatch.setenv(CACHE_GIB_ENV, str(1 / 2**30))  # one byte: every entry is evicted as soon as it is written
    quantize(model, w8a8_config(calib), tmp_path / "tiny", cache, monkeypatch, caplog)
    assert list(cache.iterdir()) == []
    monkeypatch.delenv(CACHE_GIB_ENV)
    quantize(model, w8a8_config(calib), tmp_path / "kept", cache, monkeypatch, caplog)
    entries = list(cache.iterdir())
    assert len(entries) == 4 and all(oct(p.stat().st_mode & 0o777) == "0o750" for p in entries)
    assert all(oct(f.stat().st_mode & 0o777) == "0o640" for p in entries for f in p.iterdir())


class PassesWithLayer3Float:
    """A judge (plugin entry point) that passes once model.layers.3 is float."""

    @classmethod
    def from_config(cls, raw: dict, where: str) -> "PassesWithLayer3Float":
        return cls()

    def evaluate(self, model_path: Path, quant_path: Path, work_dir: Path) -> Verdict:
        tags = json.loads((quant_path / "quant_model_description.json").read_text())
        float_layer = tags["model.layers.3.mlp.down_proj.weight"] == "FLOAT"
        return Verdict(float_layer, 0.0 if float_layer else 1.0)


def test_tune_rounds_share_the_cache(outlier_model, tmp_path, monkeypatch, caplog):
    model, calib = outlier_model
    plugin = EntryPoint("layer3", f"{__name__}:PassesWithLayer3Float", evaluators.ENTRY_POINT_GROUP)
    monkeypatch.setattr(evaluators, "entry_points", lambda group: [plugin] if group == evaluators.ENTRY_POINT_GROUP else [])
    document = {"strategy": {"type": "binary_fallback", "template": w8a8_config(calib),
                             "rollback_path": "spec.process.0.exclude", "rollback_candidates": ["model.layers.3.*"]},
                "evaluation": {"type": "layer3"}}
    config = write_config(tmp_path / "tune.yaml", document)
    with caplog.at_level(logging.INFO, logger="modelslim_runners"):
        report = run_tune(TuneArgs(str(model), str(tmp_path / "run"), str(config), "cpu", "Llama-demo"))
    assert report["rolled_back"] == ["model.layers.3.*"] and len(report["rounds"]) == 2
    assert "Reused the first 3 of 4 units" in caplog.text
    assert all(r["quantize_seconds"] + r["eval_seconds"] <= r["seconds"] + 0.02 for r in report["rounds"])
    assert len(list((tmp_path / "run" / "history" / "unit_cache").iterdir())) == 5  # round 0's 4 units + layer 3 again


def reused_by_ranks(stderr: str) -> int:
    """Units rank 0 said it took from the cache (the spawned ranks log to this process's stderr)."""
    lines = [line for line in stderr.splitlines() if "Reused the first" in line]
    return int(lines[0].split("Reused the first ")[1].split()[0]) if lines else 0


@pytest.mark.slow  # two two-rank runs: ~110 s on the shared 2-core host
def test_data_parallel_rounds_reuse_each_ranks_state(outlier_model, tmp_path, monkeypatch, caplog, capfd):
    """dp_layer_wise on two CPU ranks: a round that rolls layer 2 back takes units 0-1 from the cache (rank 0 their
    modules and state, rank 1 its own inputs and state: only two units are calibrated again) and writes the
    checkpoint the single-process run writes from scratch, byte for byte (dp equals one process for this scheme:
    tests/runners/test_data_parallel.py)."""
    model, calib = outlier_model
    cache = tmp_path / "cache"

    def parallel(exclude: list[str], out: str) -> str:
        config = w8a8_config(calib, exclude)
        config["spec"]["runner"] = "dp_layer_wise"
        monkeypatch.setenv(CACHE_ENV, str(cache))
        with caplog.at_level(logging.INFO, logger="modelslim"), caplog.at_level(logging.INFO, logger="modelslim_runners"):
            run_quant(QuantArgs(str(model), str(tmp_path / out), "Llama-demo",
                                config_path=str(write_config(tmp_path / f"{out}.yaml", config)), device="cpu:0,1"))
        return capfd.readouterr().err

    first = parallel([], "first")
    assert "Starting 2 data-parallel workers" in caplog.text and reused_by_ranks(first) == 0
    entries = sorted(cache.iterdir())
    assert len(entries) == 8  # 4 units x 2 ranks
    assert sum((entry / "unit.pt").is_file() for entry in entries) == 4  # rank 0 alone keeps the modules
    committed = {entry.name: (entry / "state.pt").stat().st_mtime_ns for entry in entries}
    rolled_back = parallel(["*model.layers.2.*"], "rolled_back")
    assert reused_by_ranks(rolled_back) == 2
    assert "layers.0 done" not in rolled_back and "model.layers.2 done (1/2" in rolled_back
    assert len(list(cache.iterdir())) == 12  # units 2-3 again, per rank; units 0-1 not rewritten:
    assert {name: (cache / name / "state.pt").stat().st_mtime_ns for name in committed} == committed
    assert quantize(model, w8a8_config(calib, ["*model.layers.2.*"]), tmp_path / "scratch", None, monkeypatch,
                    caplog) == 0
    same_checkpoint(tmp_path / "rolled_back", tmp_path / "scratch")


def test_a_rank_other_than_0_commits_its_state_without_the_unit(tmp_path):
    """Ranks above 0 save nothing (rank 0's savers do), so their entries hold only what the next unit starts from."""
    cache = UnitCache(tmp_path, ["k0", "k1"], 2**30, keeps_units=False)
    cache.store_unit(0, nn.Linear(2, 2))
    cache.store_state(0, [UnitInput((torch.ones(2),), {})], [{}], {})
    assert not (tmp_path / "k0" / UNIT_FILE).exists() and (tmp_path / "k0" / STATE_FILE).is_file()
    assert cache.reusable_prefix() == 1
    assert torch.equal(cache.load_state(0)["inputs"][0].args[0], torch.ones(2))
