"""The quant types `--quant_type` accepts, with one line each saying what they mean.

Kept free of heavy imports (no pydantic, no torch): the command line parses and lists quant types before
anything else is loaded, so a typo is reported in a fraction of a second.
"""

from __future__ import annotations

#: Every quant type the tool accepts (naming `w<W>a<A>[c8|f4|f8][s]`), with what its best practice does:
#: the reference's twelve plus w4a16, whose practice writes compressed-tensors (vLLM-Ascend loads no dense
#: W4A16 from ascendv1).
QUANT_TYPE_SUMMARIES: dict[str, str] = {
    "w4a4": "int4 weights (AutoRound) and int4 per-token dynamic activations",
    "w4a8": "int4 weights (GPTQ) with int8 per-token dynamic activations; attention stays W8A8",
    "w4a4c8": "w4a4 plus an int8 KV cache",
    "w4a4f8": "w4a4 plus int8 FlashAttention Q/K/V (FA3)",
    "w4a8c8": "w4a8 plus an int8 KV cache",
    "w4a16": "int4 per-group weights, float activations (compressed-tensors output for vLLM)",
    "w8a16": "int8 per-channel weights, float activations: the safest choice",
    "w8a8": "int8 weights, int8 activations (smoothed; static per-tensor attention, dynamic MLP)",
    "w8a8s": "w8a8 on pruned weights for sparse compression (W8A8S, Atlas 300I Duo)",
    "w8a8c8": "w8a8 plus an int8 KV cache",
    "w8a8f8": "w8a8 plus int8 FlashAttention Q/K/V (FA3)",
    "w4a4f4": "w4a4 plus 4-bit FlashAttention Q/K/V (FA quant at 4 bits)",
    "w16a16s": "float16 weights pruned for sparse compression (W16A16S), no quantization",
}

QUANT_TYPES: tuple[str, ...] = tuple(QUANT_TYPE_SUMMARIES)

#: Used when the user gives no quant type, and the fallback when the requested one has no practice.
DEFAULT_QUANT_TYPE = "w8a8"
