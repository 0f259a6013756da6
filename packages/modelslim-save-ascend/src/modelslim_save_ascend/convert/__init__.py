"""`apiversion: modelslim_convert`: offline checkpoint conversion without calibration (docs/convert.md).

A source checkpoint is read tensor by tensor from its safetensors files (the model is never built):
FP8-block and compressed-tensors INT4 linears are dequantized to float, tensors can be renamed, split or
joined, chosen linears are re-quantized to a data-free MX/dynamic format, and the result is written as an
ascendv1 or a plain Hugging Face checkpoint.
"""
