"""What the attention-side processors share: where attention modules are, and a way to see (and change) the
query, key and value states exactly where the attention kernel receives them.

`sites` finds the attention modules of a unit and their head geometry, `taps` lets processors observe or
fake-quantize the post-RoPE Q/K/V of one attention module without editing transformers, `stats` holds the
float32 running statistics the processors reduce across data-parallel ranks, and `qkv_quant` the static
per-channel (KV cache) and per-head (FA3) quantizers used both at calibration and by the reference runtime.
"""
