"""The choices `msmodelslim analyze` accepts, kept free of torch so the CLI parser can list them instantly."""

from __future__ import annotations

#: How a unit's sensitivity is measured (each is described under `msmodelslim analyze -h`).
METRICS = ("mse_layer_wise", "mse_model_wise", "float_gain", "kurtosis", "std", "quantile")
#: What one row of the ranking is: a decoder layer, one linear (MoE experts grouped), or an attention block.
SCOPES = ("layer", "linear", "attn")
