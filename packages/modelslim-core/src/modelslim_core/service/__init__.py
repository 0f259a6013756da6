"""Quantization services, one per `apiversion`, found through the `modelslim.services` entry-point group."""
