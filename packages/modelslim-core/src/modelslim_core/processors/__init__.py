"""Built-in processors, one module per YAML `type` (e.g. `type: linear_quant` lives in `linear_quant.py`)."""
