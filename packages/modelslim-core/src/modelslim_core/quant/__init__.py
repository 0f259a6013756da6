"""Quantization math: integer affine grids, observers, schemes and the quantized linear module."""
