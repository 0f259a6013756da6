"""The per-attention `quant_type` string of FA3 checkpoints (docs/formats.md).

Each branch (Q, K, V, and P in the reference) has a (dtype name, static|dynamic) setting. Branches with the
same setting form a group, in Q, K, V, P order; a group's text is `<letters>_<DTYPE>` plus `_DYNAMIC` when
dynamic, and the letters are dropped when the group is exactly QKV. Groups are joined by `_`:
all static INT8 -> `INT8`; Q dynamic FP8 with K, V static INT8 -> `Q_FP8_DYNAMIC_KV_INT8`.
"""

from __future__ import annotations

from modelslim_core.errors import CheckpointError

BRANCH_ORDER = "QKVP"
DTYPE_NAMES = {"int8": "INT8", "fp8_e4m3": "FP8", "mxfp8": "MXFP8", "mxfp4": "MXFP4"}
_DTYPES_BY_NAME = {name: dtype for dtype, name in DTYPE_NAMES.items()}

Setting = tuple[str, bool]  # (qconfig dtype, dynamic)


def format_quant_type(settings: dict[str, Setting]) -> str:
    """`settings`: branch letter -> (dtype, dynamic)."""
    groups: dict[Setting, str] = {}
    for letter in BRANCH_ORDER:
        if letter in settings:
            groups[settings[letter]] = groups.get(settings[letter], "") + letter
    parts = []
    for (dtype, dynamic), letters in groups.items():
        text = DTYPE_NAMES[dtype] if letters == "QKV" else f"{letters}_{DTYPE_NAMES[dtype]}"
        parts.append(text + ("_DYNAMIC" if dynamic else ""))
    return "_".join(parts)


def parse_quant_type(text: str, where: str) -> dict[str, Setting]:
    """Inverse of `format_quant_type` (letters default to QKV when a group has none)."""
    settings: dict[str, Setting] = {}
    letters = ""
    last: str = ""
    for token in text.split("_"):
        if token and set(token) <= set(BRANCH_ORDER):
            letters = token
        elif token in _DTYPES_BY_NAME:
            last = letters or "QKV"
            for letter in last:
                settings[letter] = (_DTYPES_BY_NAME[token], False)
            letters = ""
        elif token == "DYNAMIC" and last:
            for letter in last:
                settings[letter] = (settings[letter][0], True)
        else:
            raise CheckpointError(f"{where} is {text!r}, which is not an FA quant type string.",
                                  "expected groups like INT8, or Q_FP8_DYNAMIC_KV_INT8; re-run the quantization.")
    if not settings or letters:
        raise CheckpointError(f"{where} is {text!r}, which names no dtype for some branches.",
                              "expected groups like INT8, or Q_FP8_DYNAMIC_KV_INT8; re-run the quantization.")
    return settings
