"""--debug output: debug_info.json references resolve to the right tensors; recorder contract. (Gathering every
rank's records on rank 0 is checked by tests/runners/test_torchrun_nodes.py's two-rank --debug run.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.debug import Recorder, load_debug_info, write_debug_info
from modelslim_core.debug.persistence import JSON_NAME, TENSORS_NAME
from modelslim_core.errors import CheckpointError
from modelslim_core.quant.quantized_linear import QuantizedLinear
from modelslim_save_ascend import ascendv1
from tests.quant_runs import DYNAMIC_ACT, ONLINE_ROTATIONS_TARGET, WEIGHT_SYM, mixed_config
from tests.runners.test_data_parallel import write_config


def tensor_refs(value, found: list[dict]) -> list[dict]:
    if isinstance(value, dict):
        if value.get("_type") == "tensor":
            found.append(value)
        else:
            for item in value.values():
                tensor_refs(item, found)
    elif isinstance(value, list):
        for item in value:
            tensor_refs(item, found)
    return found


def test_shared_tensor_is_stored_once_and_keys_never_collide(tmp_path):
    recorder = Recorder(tmp_path / "debug_info")
    scale = torch.tensor([1.0, 2.0, 4.0])
    recorder.debug("smooth_scales", "layers.0.q_proj.scales", scale)
    recorder.debug("smooth_scales", "layers.0.k_proj.scales", scale)  # one norm, two linears: same tensor
    recorder.debug("rotation_matrices", "layers.0.left", [torch.eye(2), torch.eye(2) * 3])
    recorder.debug("search", "layers.0.attn", {"alpha": 0.55, "beta": 0.1, "loss": torch.tensor(0.25)})
    recorder.debug("other", "text", object())  # not a JSON type: written as str()
    scale.mul_(10)  # later in-place edits do not change what was recorded
    write_debug_info(recorder.debug_records, recorder.debug_dir)

    document = json.loads((tmp_path / "debug_info" / JSON_NAME).read_text())
    stored = load_file(tmp_path / "debug_info" / TENSORS_NAME)
    refs = tensor_refs(document, [])
    assert {r["_key"] for r in refs} == set(stored), "every stored tensor is referenced and every reference resolves"
    assert document["smooth_scales"]["layers.0.q_proj.scales"] == document["smooth_scales"]["layers.0.k_proj.scales"]
    assert len(stored) == 4  # scale once, two rotation matrices, the loss
    loaded = load_debug_info(tmp_path)
    assert torch.equal(loaded["smooth_scales"]["layers.0.k_proj.scales"], torch.tensor([1.0, 2.0, 4.0]))
    assert torch.equal(loaded["rotation_matrices"]["layers.0.left"][1], torch.eye(2) * 3)
    assert loaded["search"]["layers.0.attn"]["alpha"] == 0.55
    assert loaded["other"]["text"].startswith("<object object")


def test_recorder_is_a_no_op_without_debug_and_refuses_tensors_in_stats():
    recorder = Recorder()
    recorder.debug("linear_quant", "x", torch.ones(3))
    assert recorder.debug_records == {}
    recorder.stat("layers", "x", {"weight_rel_error": 0.1})
    assert recorder.stats == {"layers": {"x": {"weight_rel_error": 0.1}}}
    with pytest.raises(TypeError, match="tensors belong in recorder.debug"):
        recorder.stat("layers", "y", torch.ones(1))


def test_missing_tensor_is_a_clear_error(tmp_path):
    recorder = Recorder(tmp_path)
    recorder.debug("ns", "k", torch.ones(2))
    write_debug_info(recorder.debug_records, tmp_path)
    (tmp_path / TENSORS_NAME).unlink()
    with pytest.raises(CheckpointError, match="refers to tensor 'ns/k'"):
        load_debug_info(tmp_path)


def test_debug_run_records_every_quantized_linear(tiny_models, small_calib, tmp_path, cli_env):
    config = tmp_path / "mixed.yaml"
    config.write_text(mixed_config(small_calib))
    out = tmp_path / "out"
    saved: dict[str, QuantizedLinear] = {}
    act_buffers: dict[str, dict[str, torch.Tensor]] = {}
    original = ascendv1.AscendV1Saver._write_quantized

    def spy(self, prefix, layer):
        saved[prefix] = layer
        act_buffers[prefix] = {n: b.detach().clone() for n, b in layer.act.named_buffers()}  # layer_wise frees them
        original(self, prefix, layer)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ascendv1.AscendV1Saver, "_write_quantized", spy)
        run_quant(QuantArgs(str(tiny_models("qwen2")), str(out), "Qwen2-demo", config_path=str(config), device="cpu",
                            debug=True))

    info = load_debug_info(out)
    records = info["linear_quant"]
    assert saved and set(saved) == {k.removesuffix(".summary") for k in records if k.endswith(".summary")}
    for name, layer in saved.items():
        assert records[f"{name}.weight_absmax"].shape == (layer.out_features,)
        assert records[f"{name}.weight_rel_error"].shape == (layer.out_features,)
        assert records[f"{name}.summary"]["type"] == layer.export_type
    attn = "model.layers.0.self_attn.q_proj"  # static W8A8: the calibrated input scale is recorded as saved
    assert torch.equal(records[f"{attn}.act_scale"], act_buffers[attn]["scale"])
    document = json.loads((out / "debug_info" / JSON_NAME).read_text())
    stored = load_file(out / "debug_info" / TENSORS_NAME)
    assert {r["_key"] for r in tensor_refs(document, [])} == set(stored)


def test_without_debug_no_debug_info(tiny_models, small_calib, tmp_path, cli_env):
    config = tmp_path / "mixed.yaml"
    config.write_text(mixed_config(small_calib))
    out = tmp_path / "out"
    run_quant(QuantArgs(str(tiny_models("qwen2")), str(out), "Qwen2-demo", config_path=str(config), device="cpu"))
    assert not (out / "debug_info").exists()
    assert (out / "quant_report.json").is_file()


def test_debug_run_records_rotations_and_searches(tiny_models, small_calib, tmp_path, cli_env):
    process = (
        "    - {type: quarot, online: true, max_tp_size: 2, down_proj_online_layers: [1]}\n"
        "    - {type: awq, weight_qconfig: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}}\n"
        f"    - {{type: linear_quant, qconfig: {{act: {DYNAMIC_ACT}, weight: {WEIGHT_SYM}}}, include: ['*']}}\n"
    )
    config = write_config(tmp_path, "rotate", process, small_calib, runner="layer_wise")
    out = tmp_path / "out"
    run_quant(QuantArgs(str(tiny_models("qwen2")), str(out), "Qwen2-demo", config_path=str(config), device="cpu", tags=ONLINE_ROTATIONS_TARGET, debug=True))
    info = load_debug_info(out)
    rotations = info["rotation_matrices"]
    hidden = rotations["hidden"]
    assert hidden.shape == (64, 64) and torch.allclose(hidden @ hidden.T, torch.eye(64, dtype=hidden.dtype), atol=1e-5)
    assert rotations["head_dim"].shape == (16, 16)
    assert {"model.layers.0.self_attn.o_proj.heads_rotation", "model.layers.1.mlp.down_proj.kronecker_rotation_m",
            "model.layers.1.mlp.down_proj.kronecker_rotation_n"} <= set(rotations)
    assert "model.layers.0.mlp.down_proj.kronecker_rotation_m" not in rotations  # layer 0 has no online down_proj
    ratios = {key: value for key, value in info["search"].items() if key.endswith(".ratio")}
    assert ratios and all(0 <= r["ratio"] < 1 and r["loss"] >= 0 for r in ratios.values())
    assert any(key.endswith(".scales") for key in info["smooth_scales"])


def test_moe_debug_run_records_expert_tokens_and_the_report_its_coverage(tiny_models, small_calib, tmp_path, cli_env):
    from tests.moe._helpers import static_w8a8_config

    config = tmp_path / "moe.yaml"
    config.write_text(static_w8a8_config("*experts*", "layer_wise", small_calib))
    out = tmp_path / "out"
    model = tiny_models("qwen3_moe")
    run_quant(QuantArgs(str(model), str(out), "Qwen3-30B-A3B", config_path=str(config), device="cpu", debug=True))
    tokens = load_debug_info(out)["expert_tokens"]
    experts, top_k = 4, 2  # tests/tiny_models.py's qwen3_moe
    report = json.loads((out / "quant_report.json").read_text())
    for layer in range(2):
        counts = [tokens[f"model.layers.{layer}.mlp.experts.{e}"] for e in range(experts)]
        seen = report["calib_tokens"][f"model.layers.{layer}.mlp.experts.0.up_proj"]  # every expert sees every token
        assert sum(counts) == seen * top_k  # and each token is routed to top_k experts
    assert report["expert_coverage"] == tokens
