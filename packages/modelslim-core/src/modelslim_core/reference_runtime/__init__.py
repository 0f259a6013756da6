"""The reference runtime: run a saved checkpoint with the Ascend kernels' integer semantics, from the saved tensors only.

It answers the two questions users ask before deploying: does the checkpoint load (strict conformance of
every tensor's name, dtype and shape), and does it still compute what the float model computes.
"""

from modelslim_core.reference_runtime.loader import load_quantized_model

__all__ = ["load_quantized_model"]
