"""Bad conversion configs: one paragraph naming the YAML path and the fix, non-zero exit, no traceback, and
nothing written (the plan is checked from the checkpoint's headers before save_path is created)."""

from __future__ import annotations

import re

import pytest

from tests.cli._helpers import assert_clean_failure, run_inprocess
from tests.convert._run import spec_yaml

CASES = {
    "typo_key": ("linears: [{match: ['*'], target: FLOAT, rout: auto}]", ["spec.linears[0].rout", "did you mean 'route'"]),
    "unknown_target": ("linears: [{match: ['*'], target: W8A8_MXFP9}]", ["spec.linears[0].target", "'W8A8_MXFP8'"]),
    "mxfp8_to_hf": ("linears: [{match: ['*'], target: W8A8_MXFP8}]\nsave: [{type: hf}]",
                    ["spec.linears[0].target", "needs an ascendv1 output", "type: ascendv1"]),
    "unknown_save": ("save: [{type: safetensors}]", ["spec.save[0].type", "ascendv1"]),
    "two_saves": ("save: [{type: hf}, {type: ascendv1}]", ["spec.save", "one checkpoint"]),
    "preprocess_type": ("preprocess: [{type: split}]", ["spec.preprocess[0].type", "rename, convert"]),
    "bad_route": ("linears: [{match: ['*'], target: W8A8_MXFP8, route: [FLOAT, FP8_BLOCK, W8A8_MXFP8]}]",
                  ["spec.linears[0]", "no conversion FLOAT -> FP8_BLOCK"]),
    "merge_one_source": ("preprocess: [{type: convert, source: 'a.*', target: 'b.*', ops: [{type: merge}]}]",
                         ["spec.preprocess[0]", "merge joins two or more"]),
    # The ones below need the checkpoint's names and shapes.
    "match_nothing": ("linears: [{match: ['*.block_sparse_moe.*'], target: W8A8_MXFP8}]",
                      ["spec.linears[0].match", "matches no linear", "model.layers.0.self_attn.q_proj"]),
    "route_start": ("linears: [{match: ['*.mlp.*'], target: FLOAT, route: [INT4_PACKED, FLOAT]}]",
                    ["spec.linears[0].route", "stored as FP8_BLOCK", "route: auto"]),
    "src_format": ("defaults: {src_format: INT4_PACKED}", ["spec.defaults.src_format", "FP8_BLOCK"]),
    "rename_collision": ("preprocess: [{type: rename, patterns: [{from: 'gate_proj|up_proj', to: 'fused'}]}]",
                         ["spec.preprocess[0].patterns", "would both be named"]),
    "rename_nothing": ("preprocess: [{type: rename, patterns: [{from: 'block_sparse_moe', to: 'mlp'}]}]",
                       ["spec.preprocess[0].patterns", "no tensor name matches"]),
    "chunk_uneven": ("preprocess: [{type: convert, source: '*.mlp.down_proj.weight', "
                     "target: ['*.mlp.a.weight', '*.mlp.b.weight', '*.mlp.c.weight'], ops: [{type: chunk, dim: 0}]}]",
                     ["spec.preprocess[0].ops[0]", "does not split into 3 equal parts"]),
    "chunk_dim": ("preprocess: [{type: convert, source: '*.mlp.down_proj.weight', "
                  "target: ['*.mlp.a.weight', '*.mlp.b.weight'], ops: [{type: chunk, dim: 2}]}]",
                  ["spec.preprocess[0].ops[0].dim", "between -2 and 1"]),
    "convert_source_nothing": ("preprocess: [{type: convert, source: '*.experts.gate_up_proj', target: ['*.g', '*.u'], "
                               "ops: [{type: chunk}]}]", ["spec.preprocess[0].source", "matches no tensor"]),
    "merge_missing": ("preprocess: [{type: convert, source: ['*.mlp.gate_proj.weight', '*.mlp.nope.weight'], "
                      "target: '*.mlp.gu.weight', ops: [{type: merge}]}]",
                      ["spec.preprocess[0].source", "model.layers.0.mlp.nope.weight is not in the checkpoint"]),
    "merge_shapes": ("preprocess: [{type: convert, source: ['*.mlp.gate_proj.weight', '*.mlp.down_proj.weight'], "
                     "target: '*.mlp.gd.weight', ops: [{type: merge, dim: 0}]}]",
                     ["spec.preprocess[0]", "[[384, 256], [256, 384]]", "do not join along dim 0"]),
    "target_taken": ("preprocess: [{type: convert, source: '*.mlp.down_proj.weight', "
                     "target: ['*.mlp.up_proj.weight', '*.mlp.x.weight'], ops: [{type: chunk, dim: 0}]}]",
                     ["spec.preprocess[0].target", "up_proj.weight already exists"]),
    "chunk_then_mxfp4": ("preprocess: [{type: convert, source: '*.mlp.down_proj.weight', target: ['*.mlp.a.weight', "
                        "'*.mlp.b.weight'], ops: [{type: chunk, dim: 1}]}]\n"
                        "linears: [{match: ['*.mlp.a'], target: W4A8_MXFP}]", None),
}


@pytest.mark.parametrize("case", [c for c in CASES if CASES[c][1] is not None])
def test_refused_with_path_and_fix(case, fp8_source, tmp_path, capsys):
    body, needles = CASES[case]
    config = tmp_path / "bad.yaml"
    config.write_text(spec_yaml(body))
    out = tmp_path / "out"
    result = run_inprocess(["--model_path", str(fp8_source[0]), "--save_path", str(out), "--config_path", str(config)],
                           capsys)
    assert_clean_failure(result, 1, *needles)
    assert "Hint:" in result.error_line
    assert not out.exists(), "nothing is written for a config that cannot run"


def test_a_chunk_that_fits_runs(fp8_source, tmp_path, capsys):
    config = tmp_path / "ok.yaml"
    config.write_text(spec_yaml(CASES["chunk_then_mxfp4"][0]))
    result = run_inprocess(["--model_path", str(fp8_source[0]), "--save_path", str(tmp_path / "out"), "--config_path",
                            str(config)], capsys)
    assert result.code == 0, result.stderr


def test_parallel_block_is_accepted_with_a_warning(fp8_source, tmp_path, capsys):
    config = tmp_path / "parallel.yaml"
    config.write_text(spec_yaml("parallel: {workers: 4, worker_device: cpu}\nsave: [{type: hf}]"))
    result = run_inprocess(["--model_path", str(fp8_source[0]), "--save_path", str(tmp_path / "out"), "--config_path",
                            str(config)], capsys)
    assert result.code == 0, result.stderr
    assert "spec.parallel is accepted for compatibility but has no effect" in result.stderr


def test_model_type_is_still_required_for_other_configs(fp8_source, tmp_path, capsys):
    config = tmp_path / "v1.yaml"
    config.write_text("apiversion: modelslim_v1\nspec:\n  process: []\n  save: [{type: ascendv1_saver}]\n")
    result = run_inprocess(["--model_path", str(fp8_source[0]), "--save_path", str(tmp_path / "out"), "--config_path",
                            str(config)], capsys)
    assert_clean_failure(result, 2, "--model_type is required", "modelslim_convert")


def test_dry_run_lists_targets_and_writes_nothing(fp8_source, tmp_path, capsys):
    config = tmp_path / "plan.yaml"
    config.write_text(spec_yaml("linears: [{match: ['*.mlp.*'], target: W8A8_MXFP8}]"))
    out = tmp_path / "out"
    code = __import__("modelslim.cli.main", fromlist=["main"]).main(
        ["quant", "--model_path", str(fp8_source[0]), "--save_path", str(out), "--config_path", str(config), "--dry-run"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "25 tensors (FLOAT x11, FP8_BLOCK x14)" in printed
    assert "W8A8_MXFP8 x6 (spec.linears[0]):" in printed
    assert re.search(r"^FLOAT x19:\n  model\.layers\.\d\.self_attn\.\w+\.weight \[\d+, 256\] <- FP8_BLOCK$", printed, re.M), printed
    assert not out.exists()


def test_a_directory_without_safetensors_is_named(tmp_path, capsys):
    model = tmp_path / "bin-only"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "qwen3"}')
    (model / "pytorch_model.bin").write_bytes(b"")
    config = tmp_path / "c.yaml"
    config.write_text(spec_yaml("save: [{type: hf}]"))
    result = run_inprocess(["--model_path", str(model), "--save_path", str(tmp_path / "out"), "--config_path", str(config)],
                           capsys)
    assert_clean_failure(result, 1, "holds no *.safetensors weights to convert")
    assert not (tmp_path / "out").exists()
