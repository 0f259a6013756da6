"""The names `analyze` accepts (scopes and metrics), importable without torch so the CLI can offer them
before anything heavy is loaded; app/sensitivity.py defines what each one measures."""

METRICS = ("mse_layer_wise", "mse_model_wise", "float_gain", "kurtosis", "std", "quantile")
SCOPES = ("layer", "linear", "attn")
