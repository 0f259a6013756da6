"""Weight sparsity: ADMM pruning against a layer's calibration inputs, and the FP16 mantissa compression of W16A16S."""
