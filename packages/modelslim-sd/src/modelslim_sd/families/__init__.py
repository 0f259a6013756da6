"""Generation families beyond Wan2.1: Wan2.2 (T2V-A14B, I2V-A14B, TI2V-5B), FLUX.1, HunyuanVideo, Qwen-Image-Edit."""
