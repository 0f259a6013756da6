"""Serving-engine conformance: run vLLM-Ascend's and MindIE-SD's own loaders against a saved checkpoint (docs/formats.md)."""
