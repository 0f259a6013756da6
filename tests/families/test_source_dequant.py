"""Quantized source checkpoints (FP8 128x128 blocks, INT4 pack-quantized) read as float, tensor by tensor."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from modelslim_core.errors import ModelError
from modelslim_core.io.source_dequant import (DequantizingReader, dequantize_fp8_block, dequantize_packed,
                                              source_quantization, unpack_int_codes)
from modelslim_core.models.resolve import create_adapter
from modelslim_core.models.weights import SourceWeights
from tests.families._sources import write_fp8_source, write_int4_source

FP8_REL_ERROR = 0.07  # e4m3 keeps 3 mantissa bits: at most 1/16 relative error per element, ~3% on average


def test_fp8_blocks_hand_computed():
    # a 3x3 weight in 2x2 blocks: scale rows cover rows {0,1} and {2}, columns {0,1} and {2}
    weight = torch.tensor([[1.0, 2.0, 4.0], [-1.0, 0.5, 3.0], [2.0, -2.0, 1.5]]).to(torch.float8_e4m3fn)
    scale_inv = torch.tensor([[2.0, 0.5], [4.0, 10.0]])
    expected = torch.tensor([[2.0, 4.0, 2.0], [-2.0, 1.0, 1.5], [8.0, -8.0, 15.0]])
    assert torch.equal(dequantize_fp8_block(weight, scale_inv, (2, 2), torch.float32), expected)


def test_fp8_scale_that_does_not_tile_the_weight_is_named():
    weight = torch.zeros(4, 4).to(torch.float8_e4m3fn)
    with pytest.raises(ModelError, match=r"q_proj.weight_scale_inv has shape \(1, 1\).*needs \(2, 2\)"):
        dequantize_fp8_block(weight, torch.ones(1, 1), (2, 2), name="q_proj.weight")


def test_fp8_pieces_agree_with_one_shot(monkeypatch):
    from modelslim_core.io import source_dequant

    torch.manual_seed(0)
    weight, scale = torch.randn(300, 70).to(torch.float8_e4m3fn), torch.rand(10, 3) + 0.5
    whole = dequantize_fp8_block(weight, scale, (32, 32), torch.float32)
    monkeypatch.setattr(source_dequant, "ROWS_PER_PIECE", 64)  # 64-row pieces: several pieces, uneven tail
    assert torch.equal(dequantize_fp8_block(weight, scale, (32, 32), torch.float32), whole)
    manual = weight.float() * scale.repeat_interleave(32, 0)[:300].repeat_interleave(32, 1)[:, :70]
    assert torch.equal(whole, manual)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("dim", [0, 1])
def test_unpack_inverts_compressed_tensors_packing(bits, dim):
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    low, high = -(1 << (bits - 1)), (1 << (bits - 1))
    codes = torch.randint(low, high, (12, 20), dtype=torch.int8)  # 20 columns: not a whole number of words
    packed = pack_to_int32(codes, bits, packed_dim=dim)
    assert torch.equal(unpack_int_codes(packed, bits, codes.shape[dim], dim=dim), codes)


def test_packed_dequantization_hand_computed():
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    codes = torch.tensor([[1, -2, 3, 7], [-8, 0, 2, -1]], dtype=torch.int8)
    scale = torch.tensor([[0.5, 2.0], [1.0, 0.25]])  # groups of two input columns
    zero = torch.tensor([[1, 0], [0, -1]], dtype=torch.int8)
    expected_sym = torch.tensor([[0.5, -1.0, 6.0, 14.0], [-8.0, 0.0, 0.5, -0.25]])
    packed = pack_to_int32(codes, 4)
    assert torch.equal(dequantize_packed(packed, scale, (2, 4), dtype=torch.float32), expected_sym)
    expected_asym = torch.tensor([[0.0, -1.5, 6.0, 14.0], [-8.0, 0.0, 0.75, 0.0]])
    got = dequantize_packed(packed, scale, (2, 4), 4, zero_point=pack_to_int32(zero, 4, packed_dim=0), dtype=torch.float32)
    assert torch.equal(got, expected_asym)
    # activation order: column j belongs to group g_idx[j]
    g_idx = torch.tensor([1, 0, 0, 1])
    got = dequantize_packed(packed, scale, (2, 4), 4, g_idx=g_idx, dtype=torch.float32)
    assert torch.equal(got, codes.float() * scale[:, g_idx])


def test_reader_hides_companions_and_keeps_plain_tensors():
    raw = {"a.weight": torch.zeros(2, 2).to(torch.float8_e4m3fn), "a.weight_scale_inv": torch.ones(1, 1),
           "b.weight_packed": torch.zeros(2, 1, dtype=torch.int32), "b.weight_scale": torch.ones(2, 1),
           "b.weight_shape": torch.tensor([2, 8]), "norm.weight": torch.ones(2)}
    reader = DequantizingReader(raw, raw.__getitem__, lambda n: tuple(raw[n].shape))
    assert sorted(reader.names()) == ["a.weight", "b.weight", "norm.weight"]
    assert reader.shape("b.weight") == (2, 8) and reader.read("b.weight").shape == (2, 8)
    assert "b.weight_packed" not in reader and "a.weight_scale_inv" not in reader
    assert reader.read("norm.weight") is raw["norm.weight"]
    assert reader.raw_names_of("a.weight") == ["a.weight", "a.weight_scale_inv"]


def test_block_size_and_bits_come_from_config_json():
    fp8 = source_quantization({"quantization_config": {"quant_method": "fp8", "weight_block_size": [64, 32]}})
    assert fp8.fp8_block == (64, 32) and fp8.method == "fp8"
    packed = source_quantization({"text_config": {"quantization_config": {
        "quant_method": "compressed-tensors", "config_groups": {"g": {"weights": {"type": "int", "num_bits": 4}}}}}})
    assert packed.packed_bits == 4
    assert source_quantization({}) is None


# --- whole checkpoints -----------------------------------------------------------------------------------------
def _float_state(path) -> dict[str, torch.Tensor]:
    return load_file(path / "model.safetensors")


@pytest.fixture(scope="module")
def sources(tiny_models, tmp_path_factory):
    float_dir = tiny_models("deepseek_v3", torch.bfloat16)
    root = tmp_path_factory.mktemp("sources")
    return {
        "float": float_dir,
        "fp8": write_fp8_source(float_dir, root / "fp8"),
        "fp8-default-block": write_fp8_source(float_dir, root / "fp8-128", block=None),
        "int4": write_int4_source(float_dir, root / "int4"),
    }


@pytest.mark.parametrize("kind", ["fp8", "fp8-default-block", "int4"])
def test_source_reads_under_the_model_names_close_to_float(sources, kind):
    reference = _float_state(sources["float"])
    source = SourceWeights(sources[kind])
    assert source.quantized
    assert sorted(source.names()) == sorted(reference)
    for name, value in reference.items():
        read = source.read(name)
        assert read.shape == value.shape and source.shape(name) == tuple(value.shape), name
        assert read.is_floating_point()
        error = ((read.float() - value.float()).norm() / value.float().norm().clamp(min=1e-12)).item()
        assert error < (FP8_REL_ERROR if kind.startswith("fp8") else 0.2), (name, error)
    expert = "model.layers.1.mlp.experts.0.gate_proj.weight"
    assert source.nbytes([expert]) == reference[expert].numel() * 2  # planned as the bf16 it becomes


@pytest.mark.parametrize("kind", ["fp8", "int4"])
def test_model_wise_and_layer_wise_loading_dequantize(sources, kind):
    from modelslim_core.models.weights import LazyWeights, tied_aliases

    adapter = create_adapter("DeepSeek-V3", sources[kind], False)
    whole = adapter.load_model(torch.bfloat16)  # model-wise: skeleton filled through the dequantizing reader
    expected = SourceWeights(sources[kind])
    for name, param in whole.named_parameters():
        assert not param.is_meta, name
        assert torch.equal(param, expected.read(name).to(param.dtype)), name
    skeleton = adapter.build_skeleton(torch.bfloat16)  # layer-wise: every parameter found under its own name
    lazy = LazyWeights(expected, tied_aliases(skeleton), torch.bfloat16)
    assert lazy.missing([n for n, _ in skeleton.named_parameters(remove_duplicate=False)]) == []
    ids = torch.arange(3, 40).reshape(1, -1)
    reference = create_adapter("DeepSeek-V3", sources["float"], False).load_model(torch.float32)
    with torch.no_grad():
        float_logits = reference(input_ids=ids).logits
        logits = whole.float()(input_ids=ids).logits
    assert ((logits - float_logits).norm() / float_logits.norm()).item() < 0.1


@pytest.mark.parametrize("runner", ["model_wise", "layer_wise"])
def test_quantizing_an_fp8_source_matches_the_float_model(sources, tmp_path, runner):
    """The shipped DeepSeek-V3 W8A8 practice on the FP8 release: reloaded, it agrees with the float model."""
    from tests.moe._helpers import quantize, relative_logit_error, saved, tiny_practice

    dataset = tmp_path / "calib.jsonl"
    dataset.write_text('{"text": "FP8 source calibration: 1 2 3, the quick brown fox."}\n')
    config = tiny_practice("deepseek_v3", "w8a8", 2, dataset, runner, tmp_path / "practice.yaml")
    out = quantize(sources["fp8"], tmp_path / "out", "DeepSeek-V3", config)
    description, metas = saved(out)
    assert not [name for name in metas if "scale_inv" in name]  # no source-format tensor leaks into the output
    assert "quantization_config" not in json.loads((out / "config.json").read_text())  # engines must not see FP8
    assert description["model.layers.1.mlp.experts.0.gate_proj.weight"].startswith("W8A8")
    error = relative_logit_error(sources["float"], out, torch.arange(3, 60).reshape(1, -1))
    assert error < 0.15, error
