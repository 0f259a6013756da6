"""ModelSlim's `multimodal_vlm_modelslim_v1` service: vision-language (and omni) models, layer by layer.

The package holds the service, its calibration-set loaders (index.json / index.jsonl with images, audio and
video), media decoding, and the adapters of the Qwen VL / Omni families.
"""
