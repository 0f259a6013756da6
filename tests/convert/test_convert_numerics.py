"""Hand-computed cases through the conversion path: FP8-block dequantization, INT4 unpacking, MXFP8 encoding.

Each source tensor is written into a one-linear checkpoint, converted as a user would, and the saved values
are compared with numbers worked out by hand in the comments (all exactly representable in bf16 / E4M3).
"""

from __future__ import annotations

import json

import torch
from safetensors.torch import save_file

from tests.convert._run import convert, read_all, spec_yaml

LINEAR = "model.layers.0.mlp.down_proj"


def one_linear_checkpoint(directory, tensors, quantization=None):
    directory.mkdir()
    save_file(tensors, str(directory / "model.safetensors"))
    config = {"model_type": "qwen3", "torch_dtype": "bfloat16"}
    if quantization:
        config["quantization_config"] = quantization
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_fp8_block_dequantization_by_hand(tmp_path):
    # 3x5 weight in 2x2 blocks: scale_inv is ceil(3/2) x ceil(5/2) = 2x3, the last block row/column partial.
    values = torch.tensor([[1, -2, 0.5, 3, -1], [0.25, 1, -1, 2, 4], [-0.5, 1.5, 2, -3, 1]]).to(torch.float8_e4m3fn)
    scale_inv = torch.tensor([[2.0, 4.0, 8.0], [0.5, 1.0, 3.0]])
    model = one_linear_checkpoint(tmp_path / "src", {f"{LINEAR}.weight": values, f"{LINEAR}.weight_scale_inv": scale_inv},
                                  {"quant_method": "fp8", "weight_block_size": [2, 2]})
    out = convert(model, tmp_path / "out", spec_yaml("save: [{type: hf}]"))
    # row 0: x2, x2 | x4, x4 | x8 ; row 1 likewise ; row 2 (second block row): x0.5, x0.5 | x1, x1 | x3
    expected = torch.tensor([[2, -4, 2, 12, -8], [0.5, 2, -4, 8, 32], [-0.25, 0.75, 2, -3, 3]], dtype=torch.bfloat16)
    saved = read_all(out)
    assert set(saved) == {f"{LINEAR}.weight"}  # the scale is consumed, not copied
    assert saved[f"{LINEAR}.weight"].dtype == torch.bfloat16
    assert torch.equal(saved[f"{LINEAR}.weight"], expected)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())


def test_int4_packed_unpacking_by_hand(tmp_path):
    # Row 0 codes [-8, -1, 0, 1, 7, 3, -3, 2] + 8 = nibbles [0, 7, 8, 9, 15, 11, 5, 10], lowest nibble first:
    # 0xA5BF9870 as int32 = -1514170256. Row 1 is all code 0 (nibble 8): 0x88888888 = -2004318072.
    packed = torch.tensor([[-1514170256], [-2004318072]], dtype=torch.int32)
    scale = torch.tensor([[0.5], [1.0]], dtype=torch.bfloat16)  # one group per row (per channel)
    model = one_linear_checkpoint(tmp_path / "src", {
        f"{LINEAR}.weight_packed": packed, f"{LINEAR}.weight_scale": scale,
        f"{LINEAR}.weight_shape": torch.tensor([2, 8], dtype=torch.int32)})
    out = convert(model, tmp_path / "out", spec_yaml("save: [{type: hf}]"))
    expected = torch.tensor([[-4, -0.5, 0, 0.5, 3.5, 1.5, -1.5, 1], [0] * 8], dtype=torch.bfloat16)
    saved = read_all(out)
    assert set(saved) == {f"{LINEAR}.weight"}
    assert torch.equal(saved[f"{LINEAR}.weight"], expected)


def test_mxfp8_encoding_by_hand(tmp_path):
    # One block of 32: amax 3.0, floor(log2 3) = 1, shared exponent 1 - 8 = -7, stored as 127 - 7 = 120.
    # Elements are x * 2^7: 1.0 -> 128, 0.5 -> 64, 3.0 -> 384, 0.296875 -> 38 (E4M3 step 4 in [32, 64): 9.5
    # steps rounds half away from zero to 10, so 40), -0.0703125 -> -9 (exact, step 1 in [8, 16)).
    row = torch.zeros(1, 32)
    row[0, :5] = torch.tensor([1.0, 0.5, 3.0, 0.296875, -0.0703125])
    model = one_linear_checkpoint(tmp_path / "src", {f"{LINEAR}.weight": row.bfloat16()})
    out = convert(model, tmp_path / "out", spec_yaml(f"linears: [{{match: ['{LINEAR}'], target: W8A8_MXFP8}}]"))
    saved = read_all(out)
    assert saved[f"{LINEAR}.weight"].dtype == torch.float8_e4m3fn
    assert saved[f"{LINEAR}.weight_scale"].dtype == torch.uint8
    assert saved[f"{LINEAR}.weight_scale"].tolist() == [[120]]
    expected = torch.zeros(1, 32)
    expected[0, :5] = torch.tensor([128, 64, 384, 40, -9])
    assert torch.equal(saved[f"{LINEAR}.weight"].float(), expected)
    # Round trip: elements * 2^-7 give the inputs back except 0.296875, which lands on 40/128 = 0.3125.
    back = saved[f"{LINEAR}.weight"].float() * 2.0 ** -7
    assert torch.equal(back[0, :5], torch.tensor([1.0, 0.5, 3.0, 0.3125, -0.0703125]))
