"""Bit layouts of packed 4-bit tensors (docs/formats.md).

- int4 (W4A8_DYNAMIC): two's-complement nibbles packed in pairs of OUTPUT rows:
  byte[j, k] = (q[2j, k] & 0xF) | (q[2j+1, k] << 4), stored as int8 `[out/2, in]`.
- FP4 E2M1 (MXFP4 weights): code = index of |v| in (0, 0.5, 1, 1.5, 2, 3, 4, 6) plus 8 when the sign bit is
  set (so −0 is 8); codes packed in pairs along the INPUT dim, low nibble first: byte = c[2j] | c[2j+1] << 4,
  uint8 `[out, in/2]`.
Both packers refuse an odd packing dimension and values outside their format instead of guessing.
"""

from __future__ import annotations

import torch

FP4_E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
_FP4_SIGN = 8


def _check_even(size: int, what: str) -> None:
    if size % 2:
        raise ValueError(f"{what} must be even to pack two 4-bit values per byte, got {size}")


def pack_int4_rows(codes: torch.Tensor) -> torch.Tensor:
    """int4 codes (int8 container, values −8..7) [..., out, in] -> int8 [..., out/2, in], pairs of rows per byte."""
    _check_even(codes.shape[-2], "the output dimension")
    if codes.numel():
        low_code, high_code = torch.aminmax(codes)
        if low_code < -8 or high_code > 7:
            raise ValueError("int4 codes must lie in -8..7")
    # Bytes throughout (two's-complement bits are the same in uint8): one half-size temporary per step, not int16.
    bits = codes.to(torch.int8).view(torch.uint8)
    packed = bits[..., 0::2, :] & 0xF
    return packed.bitwise_or_(bits[..., 1::2, :] << 4).view(torch.int8)


def unpack_int4_rows(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of pack_int4_rows: int8 [..., out/2, in] -> int8 codes [..., out, in] (sign-extended nibbles)."""
    byte = packed.view(torch.uint8).to(torch.int16)
    low, high = byte & 0xF, byte >> 4
    low, high = torch.where(low > 7, low - 16, low), torch.where(high > 7, high - 16, high)
    rows = torch.stack((low, high), dim=-2)  # [..., out/2, 2, in]
    return rows.reshape(*packed.shape[:-2], 2 * packed.shape[-2], packed.shape[-1]).to(torch.int8)


def fp4_codes(values: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (uint8, 0..15) of values that are exactly representable in E2M1 (±0 … ±6)."""
    table = torch.tensor(FP4_E2M1_VALUES, dtype=torch.float32, device=values.device)
    magnitude = values.float().abs()
    index = torch.searchsorted(table, magnitude.contiguous()).clamp(max=len(FP4_E2M1_VALUES) - 1)
    if not torch.equal(table[index], magnitude):
        raise ValueError("values are not exactly representable in FP4 E2M1")
    return (index + _FP4_SIGN * torch.signbit(values).long()).to(torch.uint8)


def fp4_values(codes: torch.Tensor) -> torch.Tensor:
    """float32 values of E2M1 codes (code 8 is −0)."""
    table = torch.tensor(FP4_E2M1_VALUES, dtype=torch.float32, device=codes.device)
    codes = codes.long()
    magnitude = table[codes & 0x7]
    return torch.where(codes & _FP4_SIGN > 0, -magnitude, magnitude)


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """E2M1 codes [..., in] -> uint8 [..., in/2], low nibble = even column."""
    _check_even(codes.shape[-1], "the input dimension")
    codes = codes.to(torch.uint8)
    return codes[..., 0::2] | (codes[..., 1::2] << 4)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of pack_fp4: uint8 [..., in/2] -> codes [..., in]."""
    pairs = torch.stack((packed & 0xF, packed >> 4), dim=-1)
    return pairs.reshape(*packed.shape[:-1], 2 * packed.shape[-1])


def layout_problems(export_type: str, name: str, out_features: int, in_features: int) -> list[str]:
    """Why a `[out, in]` linear called `name` cannot be saved in `export_type`'s packed layout (empty if it can)."""
    from modelslim_core.quant.scale_bias import scale_bias_chunks

    problems = []
    if export_type == "W4A8_DYNAMIC":
        if out_features % 2:
            problems.append(f"W4A8_DYNAMIC packs pairs of output rows, but the output dimension {out_features} is odd")
        chunks = scale_bias_chunks(name)
        if in_features % chunks:
            problems.append(f"its W4A8_DYNAMIC scale_bias splits the input dimension {in_features} into {chunks} shards")
    if export_type in ("W4A8_MXFP", "W4A4_MXFP4") and in_features % 2:
        problems.append(f"{export_type} packs pairs of input columns, but the input dimension {in_features} is odd")
    if export_type == "W4A4_MXFP4_DUALSCALE" and in_features % 64:
        problems.append(f"{export_type} pairs the E8M0 scales of two 32-blocks, so the input dimension "
                        f"{in_features} must be a multiple of 64")
    return problems
