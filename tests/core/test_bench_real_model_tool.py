"""tools/bench_real_model.py's pure parts: the calibration variants of the noise runs and the adaptive group size."""

from __future__ import annotations

import json

import pytest

from tools import bench_real_model as bench


def texts(path) -> list[str]:
    return [json.loads(line)["inputs_pretokenized"] for line in path.read_text(encoding="utf-8").splitlines() if line]


def test_calibration_variants_keep_or_reorder_or_drop_exactly_the_named_texts(tmp_path):
    original = texts(bench.CALIB)
    assert bench.calibration_variant("all", tmp_path) == bench.CALIB
    assert texts(bench.calibration_variant("reversed", tmp_path)) == original[::-1]
    assert texts(bench.calibration_variant("drop:2", tmp_path)) == original[:2] + original[3:]
    for bad in ("drop:x", f"drop:{len(original)}", "shuffle"):
        with pytest.raises(SystemExit, match="--calib_variant"):
            bench.calibration_variant(bad, tmp_path)


def test_explicit_rows_calibrate_on_the_variant_and_practices_keep_their_dataset(tmp_path):
    variant = bench.calibration_variant("reversed", tmp_path)
    rows = bench.schemes(64, variant)
    assert all(row.config["spec"]["dataset"] == str(variant) for row in rows if row.config is not None)
    assert {row.quant_type for row in rows if row.config is None} == {"w8a8", "w4a16", "w4a8"}
    w4a16 = next(row for row in rows if row.name.startswith("W4A16"))
    assert w4a16.extra_args == ["--group_size", "64"]


def test_adaptive_group_size_is_the_largest_dividing_every_input(tmp_path):
    for hidden, intermediate, expected in ((4096, 11008, 128), (576, 1536, 64), (96, 352, 32), (100, 300, 0)):
        (tmp_path / "config.json").write_text(json.dumps({"hidden_size": hidden, "intermediate_size": intermediate}))
        assert bench.adaptive_group_size(tmp_path) == expected
