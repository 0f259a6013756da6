"""`multimodal_sd_modelslim_v1`: diffusion transformers (Wan2.1 through diffusers), captured calibration, MindIE-SD output."""
