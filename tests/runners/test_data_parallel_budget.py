"""The memory budget of a data-parallel run is the host's, shared by the ranks on the host: each rank plans and
checks its pieces against its share, and a piece that does not fit stops the run with its name and bytes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from modelslim_runners.dp_layer_wise import ranks_on_this_host, share_budget
from tests.runners.test_data_parallel import quant, write_config
from tests.runners.test_torchrun_nodes import DATA_FREE


def test_each_rank_gets_an_equal_share_of_the_host_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert ranks_on_this_host(2) == 2  # spawned ranks: all on this host
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    assert ranks_on_this_host(2) == 1  # torchrun --nnodes 2 --nproc_per_node 1: one rank per host
    context = SimpleNamespace(max_memory=6 * 2**30)
    assert share_budget(context, 3) == 6 * 2**30 and context.max_memory == 2 * 2**30
    unbounded = SimpleNamespace(max_memory=None)
    assert share_budget(unbounded, 2) is None and unbounded.max_memory is None


@pytest.mark.slow
def test_a_rank_whose_share_is_too_small_stops_with_the_piece_and_its_need(tiny_models, small_calib, tmp_path) -> None:
    config = write_config(tmp_path, "dynamic", DATA_FREE, small_calib, runner="dp_layer_wise")
    out = tmp_path / "out"
    result = quant(tiny_models("qwen2"), out, config, "cpu:0,1", extra=("--max_memory", "1.5GiB"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert "needs ~" in result.stderr and "memory budget of" in result.stderr, result.stderr
    assert "model.layers." in result.stderr  # the piece that did not fit is named
    assert "split between 2" in result.stderr and "fewer ranks" in result.stderr, result.stderr
    assert not (out / "quant_model_description.json").exists()
