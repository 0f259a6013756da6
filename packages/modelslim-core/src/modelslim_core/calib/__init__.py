"""Calibration data: finding a dataset by name and reading its texts."""
