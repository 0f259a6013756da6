"""Multimodal calibration sets: where a `spec.dataset` name points, what its entries say, and their media."""

from modelslim_vlm.dataset.resolve import load_vlm_dataset
from modelslim_vlm.dataset.sample import MediaSample

__all__ = ["MediaSample", "load_vlm_dataset"]
