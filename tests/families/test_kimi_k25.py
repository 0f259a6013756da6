"""Kimi-K2.5: the vision tower is written back in the release's layout (fused `wqkv` with the rotary rows
interleaved again, `blocks`, `norm0`/`norm1`, `mlp.fc0`/`fc1`, `wo`, `mm_projector.proj.0/2`), the language model
under `language_model.model.layers`; W4A8 targets MindIE LLM because vLLM-Ascend 0.23 cannot load kimi_k25's
quantized experts."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from modelslim.engines.conformance import check_saved
from modelslim_core.errors import ConfigError
from modelslim_core.models.fused_tensors import FusedPart, FusedTensorBuffer
from modelslim_vlm.models.kimi_k25 import KimiK25Adapter, interleave_rotary_rows
from tests.families._tiny_vlm import make_kimi_k25
from tests.families._vlm_runs import logits_error, quantize_vlm

#: Practices these tests put through vLLM-Ascend's loader (w8a8) or its load-time refusal (w4a8: MindIE LLM only).
ENGINE_CHECKED = ("kimi_k25/kimi_k25-w8a8.yaml", "kimi_k25/kimi_k25-w4a8.yaml")


@pytest.fixture(scope="module")
def kimi(tmp_path_factory):
    return make_kimi_k25(tmp_path_factory.mktemp("kimi_k25") / "model")


def _tensors(directory, pattern: str) -> dict[str, torch.Tensor]:
    found = {}
    for file in directory.glob(pattern):
        with safe_open(file, framework="pt") as handle:
            found.update({name: handle.get_tensor(name) for name in handle.keys()})
    return found


def test_w8a8_writes_the_tower_in_the_release_layout_bit_for_bit(kimi, media_index, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = quantize_vlm(kimi, tmp_path / "out", "Kimi-K2.5", "kimi_k25/kimi_k25-w8a8.yaml", media_index)
    source = _tensors(kimi, "model*.safetensors")
    saved = _tensors(out, "quant_model_weights*.safetensors")
    tower = [name for name in source if name.startswith(("vision_tower.", "mm_projector."))]
    assert any(name.endswith(".wqkv.weight") for name in tower)
    for name in tower:  # every tower tensor under its release name, unchanged (the fused wqkv included)
        assert torch.equal(saved[name], source[name]), name
    assert not [name for name in saved if ".q_proj." in name or name.startswith("model.")]
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["language_model.model.layers.0.self_attn.q_a_proj.weight"] == "W8A8"
    assert description["language_model.model.layers.1.mlp.shared_experts.up_proj.weight"] == "W8A8_DYNAMIC"
    assert description["language_model.model.layers.1.mlp.experts.2.gate_proj.weight"] == "FLOAT"
    assert description["language_model.model.layers.0.self_attn.kv_b_proj.weight"] == "FLOAT"
    error = logits_error("Kimi-K2.5", kimi, out, media_index)
    print(f"kimi_k25-w8a8: relative multimodal logits error {error:.4f}")
    assert error < 0.05
    assert [str(problem) for problem in check_saved(out, "vllm-ascend")] == []


def test_w4a8_for_mindie_quantizes_the_experts_and_reloads(kimi, media_index, tmp_path, monkeypatch):
    from modelslim.app.quick_quant import QuantArgs, run_quant
    from tests.tiny_models import REPO
    import yaml

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = yaml.safe_load((REPO / "practices/kimi_k25/kimi_k25-w4a8.yaml").read_text(encoding="utf-8"))
    config["spec"].update(dataset=str(media_index))
    config["spec"]["save"][0]["part_file_size"] = 0
    path = tmp_path / "w4a8.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    with pytest.raises(ConfigError, match="kimi_k25"):  # vLLM-Ascend 0.23 (the default target) has no expert layout
        run_quant(QuantArgs(str(kimi), str(tmp_path / "refused"), "Kimi-K2.5", config_path=str(path), device="cpu"))
    out = run_quant(QuantArgs(str(kimi), str(tmp_path / "out"), "Kimi-K2.5", config_path=str(path), device="cpu",
                              tags=["MindIE"]))
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["language_model.model.layers.1.mlp.experts.3.down_proj.weight"] == "W4A8_DYNAMIC"
    error = logits_error("Kimi-K2.5", kimi, out, media_index)
    print(f"kimi_k25-w4a8: relative multimodal logits error {error:.4f}")
    assert error < 0.08


@pytest.mark.parametrize("module, release", [
    ("model.language_model.layers.3.mlp.experts.7.gate_proj.weight", "language_model.model.layers.3.mlp.experts.7.gate_proj.weight"),
    ("lm_head.weight", "language_model.lm_head.weight"),
    ("model.vision_tower.layers.2.norm1.bias", "vision_tower.encoder.blocks.2.norm0.bias"),
    ("model.vision_tower.layers.2.norm2.weight", "vision_tower.encoder.blocks.2.norm1.weight"),
    ("model.vision_tower.layers.0.mlp.fc1.weight", "vision_tower.encoder.blocks.0.mlp.fc0.weight"),
    ("model.vision_tower.layers.0.mlp.fc2.bias", "vision_tower.encoder.blocks.0.mlp.fc1.bias"),
    ("model.vision_tower.layers.11.attn.proj.weight", "vision_tower.encoder.blocks.11.wo.weight"),
    ("model.vision_tower.patch_embed.proj.weight", "vision_tower.encoder.patch_embed.proj.weight"),
    ("model.vision_tower.patch_embed.pos_emb.position_embeddings", "vision_tower.patch_embed.pos_emb.weight"),
    ("model.vision_tower.final_layernorm.weight", "vision_tower.encoder.final_layernorm.weight"),
    ("model.mm_projector.in_proj.weight", "mm_projector.proj.0.weight"),
    ("model.mm_projector.out_proj.bias", "mm_projector.proj.2.bias"),
    ("model.mm_projector.pre_norm.weight", "mm_projector.pre_norm.weight"),
])
def test_release_names(module, release):
    adapter = KimiK25Adapter.__new__(KimiK25Adapter)
    assert adapter.saved_tensor_name(module) == release


def test_rotary_rows_by_hand_and_against_transformers():
    """Two heads of four rows: transformers' split-halves order (0, 2, 1, 3 of the release's interleaved pairs)
    goes back to 0, 1, 2, 3; and the function inverts transformers' own load-time permutation."""
    from types import SimpleNamespace

    from transformers.core_model_loading import PermuteForRope

    split = torch.tensor([[0.0], [2.0], [1.0], [3.0], [4.0], [6.0], [5.0], [7.0]])
    assert interleave_rotary_rows(split, heads=2).flatten().tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    release = torch.randn(24, 5)
    loaded = PermuteForRope()._permute_for_rope(release, SimpleNamespace(num_attention_heads=3))
    assert torch.equal(interleave_rotary_rows(loaded, heads=3), release)
    bias = torch.randn(24)
    assert torch.equal(interleave_rotary_rows(PermuteForRope()._permute_for_rope(bias, SimpleNamespace(
        num_attention_heads=3)), heads=3), bias)


def test_fused_buffer_writes_once_every_part_arrived():
    buffer = FusedTensorBuffer()
    part = lambda slot: FusedPart("blocks.0.wqkv.weight", slot, 3, torch.cat)  # noqa: E731
    assert buffer.add(part(2), torch.full((1, 2), 2.0)) is None
    assert buffer.add(part(0), torch.zeros(1, 2)) is None
    assert buffer.pending() == ["blocks.0.wqkv.weight"]
    fused = buffer.add(part(1), torch.ones(1, 2))
    assert fused[:, 0].tolist() == [0.0, 1.0, 2.0] and buffer.pending() == []


def test_w4a8_is_verified_for_mindie():
    """`--quant_type w4a8 --tag MindIE` finds the W4A8 practice at lookup level 1, with no confirmation."""
    from modelslim_core.practice import PracticeLibrary, select_practice
    from tests.tiny_models import REPO

    selection = select_practice(PracticeLibrary([REPO / "practices"]), "kimi_k25", "Kimi-K2.5", "w4a8", ["MindIE"])
    assert (selection.practice.metadata.config_id, selection.level, selection.tip) == ("kimi_k25-w4a8", 1, None)
