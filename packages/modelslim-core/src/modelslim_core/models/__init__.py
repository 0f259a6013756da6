"""Model adapters: how a family is loaded, split into units and fed calibration data."""
