"""Reading quantized source checkpoints as float, one tensor at a time.

Several families publish their weights already quantized, and we quantize from float:

- FP8 128x128 blocks (DeepSeek-V3/R1/V3.x, Kimi-K2, MiniMax-M2): a linear's `weight` is float8_e4m3fn and
  `weight_scale_inv` holds one float32 multiplier per `[128, 128]` block (`ceil(out/128) x ceil(in/128)`):
  `float = fp8 * weight_scale_inv[row // 128, col // 128]`. The block size is config.json's
  `quantization_config.weight_block_size` when given.
- compressed-tensors "pack-quantized" integers (Kimi-K2-Thinking's INT4 experts): `weight_packed` holds the
  codes 32/bits per int32 word along the input dimension, each stored with an offset of 2^(bits-1);
  `weight_scale` one scale per group of input columns; `weight_shape` the float shape; optionally
  `weight_zero_point` (asymmetric schemes, packed along the output dimension) and `weight_g_idx` (the group of
  every input column, for activation-ordered GPTQ). `float = (code - zero_point) * scale[group]`.

`DequantizingReader` wraps any raw name -> tensor reader and shows the checkpoint under the model's own names
(`<linear>.weight`, the scale/packing tensors hidden), dequantizing a tensor only when it is read and a few
thousand rows at a time, so neither a whole model nor a whole float32 copy of a large tensor is ever held.
Everything here is pure torch; the functions are public because checkpoint conversion reuses them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modelslim_core.errors import ModelError

#: Block shape of FP8 source checkpoints when config.json does not give `weight_block_size`.
DEFAULT_FP8_BLOCK = (128, 128)
#: Rows dequantized at once: bounds the float32 working copy of a large tensor (4096 rows x 18432 columns
#: is 300 MB; the result is written into a tensor of the target dtype).
ROWS_PER_PIECE = 4096

FP8_SCALE_SUFFIX = ".weight_scale_inv"
PACKED_SUFFIX = ".weight_packed"
#: Companions of `weight_packed` in a compressed-tensors layer; none of them is a model parameter.
PACKED_COMPANIONS = (".weight_scale", ".weight_shape", ".weight_zero_point", ".weight_g_idx")

_FLOAT8 = {torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz}


@dataclass(frozen=True)
class SourceQuantization:
    """What config.json says about a quantized source: FP8 block size and the packed integers' bit width."""

    method: str | None = None  # quantization_config.quant_method ("fp8", "compressed-tensors", ...)
    fp8_block: tuple[int, int] = DEFAULT_FP8_BLOCK
    packed_bits: int | None = None  # None: inferred from the packed and float shapes


def _quantization_config(config_json: dict[str, Any]) -> dict[str, Any] | None:
    for holder in (config_json, config_json.get("text_config") or {}):
        config = holder.get("quantization_config")
        if isinstance(config, dict):
            return config
    return None


def source_quantization(config_json: dict[str, Any]) -> SourceQuantization | None:
    """The source format declared in config.json's `quantization_config` (top level or text_config); None if
    the checkpoint declares none. Formats are also recognised from tensor names alone (`DequantizingReader`)."""
    config = _quantization_config(config_json)
    if config is None:
        return None
    block = config.get("weight_block_size")
    fp8_block = tuple(int(b) for b in block) if isinstance(block, (list, tuple)) and len(block) == 2 else DEFAULT_FP8_BLOCK
    bits = None
    for group in (config.get("config_groups") or {}).values():
        weights = group.get("weights") if isinstance(group, dict) else None
        if isinstance(weights, dict) and weights.get("type") == "int" and isinstance(weights.get("num_bits"), int):
            bits = weights["num_bits"]
    return SourceQuantization(method=config.get("quant_method"), fp8_block=fp8_block, packed_bits=bits)


def read_source_quantization(model_path: Path) -> SourceQuantization | None:
    """`source_quantization` of a model directory's config.json (None when there is no readable one)."""
    try:
        data = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return source_quantization(data) if isinstance(data, dict) else None


# --- FP8 blocks ----------------------------------------------------------------------------------------------
def dequantize_fp8_block(weight: torch.Tensor, scale_inv: torch.Tensor, block: tuple[int, int] = DEFAULT_FP8_BLOCK,
                         dtype: torch.dtype = torch.bfloat16, name: str = "weight") -> torch.Tensor:
    """`weight` (float8, `[out, in]`) times its per-block multiplier `scale_inv` (`[ceil(out/b0), ceil(in/b1)]`).

    A scale that does not tile the weight with `block` is an error naming the tensor: multiplying anyway would
    produce a plausible-looking but wrong model.
    """
    if weight.dim() != 2:
        raise ModelError(f"FP8 tensor {name} has shape {tuple(weight.shape)}; block-scaled FP8 weights are 2-D.",
                         "the checkpoint is not in the FP8 128x128 block format; check config.json's quantization_config.")
    rows, cols = weight.shape
    block_rows, block_cols = block
    expected = (-(-rows // block_rows), -(-cols // block_cols))
    if tuple(scale_inv.shape) != expected:
        raise ModelError(
            f"{name}{FP8_SCALE_SUFFIX[len('.weight'):]} has shape {tuple(scale_inv.shape)}, but a {rows}x{cols} weight in "
            f"{block_rows}x{block_cols} blocks needs {expected}.",
            "set quantization_config.weight_block_size in config.json to the checkpoint's block size.",
        )
    out = torch.empty(rows, cols, dtype=dtype)
    scale = scale_inv.float()
    step = max(block_rows, ROWS_PER_PIECE // block_rows * block_rows)
    for start in range(0, rows, step):
        piece = weight[start:start + step].float()
        piece_scale = scale[start // block_rows:-(-(start + piece.shape[0]) // block_rows)]
        piece_scale = piece_scale.repeat_interleave(block_rows, 0)[:piece.shape[0]].repeat_interleave(block_cols, 1)[:, :cols]
        out[start:start + step] = (piece * piece_scale).to(dtype)
    return out


# --- packed integers (compressed-tensors pack-quantized) -------------------------------------------------------
def unpack_int_codes(packed: torch.Tensor, bits: int, length: int, dim: int = 1) -> torch.Tensor:
    """Signed integer codes (int8) from int32 words holding 32/bits codes each along `dim`, lowest bits first,
    stored with an offset of 2^(bits-1); `length` is the unpacked size of `dim` (the words' padding is cut)."""
    if bits not in (2, 4, 8):
        raise ModelError(f"packed weights with {bits}-bit codes are not supported.", "only 2-, 4- and 8-bit packing exists.")
    per_word = 32 // bits
    words = packed.to(torch.int64) & 0xFFFFFFFF  # the unsigned view of each int32 word
    if dim == 0:
        words = words.transpose(0, 1)
    shifts = torch.arange(per_word, dtype=torch.int64) * bits
    codes = (words.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)
    codes = codes.reshape(words.shape[0], -1)[:, :length] - (1 << (bits - 1))
    codes = codes.to(torch.int8)
    return codes.transpose(0, 1).contiguous() if dim == 0 else codes


def packed_bits(packed_columns: int, in_features: int) -> int:
    """The code width implied by a packed row's word count; rows shorter than a word are ambiguous, and then
    the common 4 bits wins (config.json's `num_bits` settles it when present)."""
    for bits in (4, 8, 2):
        if -(-in_features * bits // 32) == packed_columns:
            return bits
    raise ModelError(f"a packed row of {packed_columns} int32 words does not hold {in_features} codes of 2, 4 or 8 bits.",
                     "the checkpoint's weight_packed and weight_shape disagree; check the model files.")


def dequantize_packed(packed: torch.Tensor, scale: torch.Tensor, shape: tuple[int, int], bits: int | None = None,
                      zero_point: torch.Tensor | None = None, g_idx: torch.Tensor | None = None,
                      dtype: torch.dtype = torch.bfloat16, name: str = "weight") -> torch.Tensor:
    """The float weight of a compressed-tensors pack-quantized linear: `(code - zero_point) * scale[group]`.

    `scale` is `[out, groups]` (one group: per channel); the group size is `in / groups` unless `g_idx` maps
    every input column to its group. `zero_point`, when present, is packed along the output dimension.
    """
    rows, cols = shape
    bits = bits or packed_bits(packed.shape[1], cols)
    if scale.dim() == 1:
        scale = scale.unsqueeze(1)
    groups = scale.shape[1]
    if scale.shape[0] != rows or (g_idx is None and cols % groups):
        raise ModelError(f"{name}_scale has shape {tuple(scale.shape)}, which does not divide a {rows}x{cols} weight "
                         "into groups of input columns.", "the checkpoint's scales and weight_shape disagree; check the model files.")
    column_group = g_idx.to(torch.int64) if g_idx is not None else torch.arange(cols) // (cols // groups)
    zeros = None if zero_point is None else unpack_int_codes(zero_point, bits, rows, dim=0).float()
    out = torch.empty(rows, cols, dtype=dtype)
    for start in range(0, rows, ROWS_PER_PIECE):
        stop = min(rows, start + ROWS_PER_PIECE)
        codes = unpack_int_codes(packed[start:stop], bits, cols).float()
        if zeros is not None:
            codes = codes - zeros[start:stop, column_group]
        out[start:stop] = (codes * scale[start:stop].float()[:, column_group]).to(dtype)
    return out


# --- the reader --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Dequantized:
    """How one logical `<linear>.weight` is rebuilt from raw checkpoint tensors."""

    kind: str  # "fp8" or "packed"
    prefix: str  # the linear's name (without `.weight`)


class DequantizingReader:
    """A checkpoint's tensors under the model's names, with quantized linears dequantized as they are read.

    `raw_names` are the tensor names in the files, `read_raw(name)` reads one, `shape_raw(name)` gives its
    shape without reading. Formats are recognised from the names (`weight` + `weight_scale_inv` in float8:
    FP8 blocks; `weight_packed` + `weight_scale`: packed integers), so a checkpoint whose config.json lost its
    `quantization_config` still reads correctly; `quantization` adds the block size and bit width it declares.
    Tensors in neither format are passed through unchanged.
    """

    def __init__(self, raw_names: Iterable[str], read_raw: Callable[[str], torch.Tensor],
                 shape_raw: Callable[[str], tuple[int, ...]], quantization: SourceQuantization | None = None,
                 dtype: torch.dtype = torch.bfloat16):
        self._read_raw = read_raw
        self._shape_raw = shape_raw
        self.quantization = quantization or SourceQuantization()
        self.dtype = dtype
        ordered = list(raw_names)
        raw = set(ordered)
        self._dequantized: dict[str, _Dequantized] = {}
        hidden: set[str] = set()
        for name in ordered:
            if name.endswith(FP8_SCALE_SUFFIX) and (weight := name[:-len("_scale_inv")]) in raw:
                self._dequantized[weight] = _Dequantized("fp8", weight[:-len(".weight")])
                hidden.add(name)
            elif name.endswith(PACKED_SUFFIX) and f"{name[:-len(PACKED_SUFFIX)]}.weight_scale" in raw:
                prefix = name[:-len(PACKED_SUFFIX)]
                self._dequantized[f"{prefix}.weight"] = _Dequantized("packed", prefix)
                hidden.add(name)
                hidden.update(f"{prefix}{suffix}" for suffix in PACKED_COMPANIONS)
        self._raw = raw
        self._names = [n for n in ordered if n not in hidden] + [n for n in self._dequantized if n not in raw]
        self._visible = set(self._names)

    @property
    def quantized(self) -> bool:
        """Whether any tensor is stored quantized (and is dequantized on reading)."""
        return bool(self._dequantized)

    def names(self) -> list[str]:
        """Every tensor name the model sees (quantized linears as `<linear>.weight`)."""
        return list(self._names)

    def __contains__(self, name: str) -> bool:
        return name in self._visible

    def is_dequantized(self, name: str) -> bool:
        return name in self._dequantized

    def stored_format(self, name: str) -> str:
        """How `name` is stored: "fp8_block", "packed" (compressed-tensors integers) or "plain" (as it is)."""
        entry = self._dequantized.get(name)
        return "plain" if entry is None else ("fp8_block" if entry.kind == "fp8" else "packed")

    def raw_names_of(self, name: str) -> list[str]:
        """The file tensors that make up `name` (itself when it is stored as it is)."""
        entry = self._dequantized.get(name)
        if entry is None:
            return [name]
        if entry.kind == "fp8":
            return [name, f"{entry.prefix}{FP8_SCALE_SUFFIX}"]
        return [f"{entry.prefix}{PACKED_SUFFIX}"] + [f"{entry.prefix}{s}" for s in PACKED_COMPANIONS if f"{entry.prefix}{s}" in self._raw]

    def shape(self, name: str) -> tuple[int, ...]:
        entry = self._dequantized.get(name)
        if entry is None or entry.kind == "fp8":
            return tuple(self._shape_raw(name))
        return self._packed_shape(entry.prefix)

    def _packed_shape(self, prefix: str) -> tuple[int, int]:
        if f"{prefix}.weight_shape" in self._raw:
            rows, cols = (int(v) for v in self._read_raw(f"{prefix}.weight_shape").tolist())
            return rows, cols
        rows, words = self._shape_raw(f"{prefix}{PACKED_SUFFIX}")
        bits = self.quantization.packed_bits or 4
        return rows, words * (32 // bits)

    def read(self, name: str) -> torch.Tensor:
        entry = self._dequantized.get(name)
        if entry is None:
            return self._read_raw(name)
        if entry.kind == "fp8":
            weight = self._read_raw(name)
            scale = self._read_raw(f"{entry.prefix}{FP8_SCALE_SUFFIX}")
            if weight.dtype not in _FLOAT8:  # a float weight with a leftover scale: already dequantized
                return weight
            return dequantize_fp8_block(weight, scale, self.quantization.fp8_block, self.dtype, name)
        prefix = entry.prefix
        optional = {suffix: self._read_raw(f"{prefix}{suffix}") if f"{prefix}{suffix}" in self._raw else None
                    for suffix in (".weight_zero_point", ".weight_g_idx")}
        return dequantize_packed(
            self._read_raw(f"{prefix}{PACKED_SUFFIX}"), self._read_raw(f"{prefix}.weight_scale"), self._packed_shape(prefix),
            self.quantization.packed_bits, optional[".weight_zero_point"], optional[".weight_g_idx"], self.dtype, name,
        )
