"""A tiny Wan2.1 pipeline built offline from config objects and saved in the diffusers layout.

Transformer (2 blocks, width 32, bf16 like the released checkpoints), Wan VAE, UMT5 text encoder and the
repository's example tokenizer (a byte-level BPE with a pad token, which is all WanPipeline asks of its
tokenizer), and the flow-matching UniPC scheduler the diffusers Wan2.1 checkpoints use. A 32x32, 5-frame,
2-step generation takes well under a second on the CPU.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tests.tiny_models import EXAMPLE_MODEL

#: Generation settings every SD test uses unless it says otherwise (CFG on: two calls per step).
TINY_MODEL_CONFIG = {
    "prompt": "a small robot waters a plant",
    "negative_prompt": "blurry",
    "frame_num": 5,
    "size": "32*32",
    "sample_steps": 2,
    "guidance": 5.0,
    "seed": 7,
    "task": "t2v-1.3B",
}


def make_tiny_wan(target: Path, seed: int = 0) -> Path:
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(EXAMPLE_MODEL, local_files_only=True)
    text_encoder = UMT5EncoderModel(
        UMT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8)
    )
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=16, out_channels=16,
        text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ).to(torch.bfloat16)
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                       transformer=transformer)
    pipe.save_pretrained(target)
    return target
