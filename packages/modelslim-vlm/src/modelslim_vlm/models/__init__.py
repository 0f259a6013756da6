"""Adapters of the multimodal families the VLM service quantizes."""
