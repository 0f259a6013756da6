"""Tiny pipelines of the generation families, built offline from diffusers config objects.

Wan2.2 transformers have 6 blocks, so the W4A4 practices' MXFP8 blocks 0-4 and MXFP4 block 5 both occur.
Wan2.2 pipelines are complete (the tiny Wan2.1 text encoder, tokenizer and VAE; two experts for the A14B
models, `boundary_ratio` 0.5 so a 4-step generation gives each expert two steps), so calibration capture
runs the real pipeline. FLUX.1, HunyuanVideo and Qwen-Image-Edit directories hold model_index.json and the
transformer only: their practices are data-free, which loads nothing else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from tests.sd.tiny_wan import make_tiny_wan

#: Settings of the tiny Wan2.2 generations: 4 steps (shift 1: timesteps 999, 750, 500, 250, two per expert),
#: guidance on (two calls per step).
TINY_WAN22 = {"prompt": "a small robot waters a plant", "negative_prompt": "blurry", "size": "32*32",
              "frame_num": 5, "sample_steps": 4, "sample_shift": 1.0, "sample_guide_scale": 4.0, "base_seed": 3}


def wan_transformer(in_channels: int = 16, seed: int = 0, **extra: Any):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32, in_channels=in_channels,
        out_channels=16, text_dim=32, freq_dim=32, ffn_dim=64, num_layers=6, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_max_seq_len=32, **extra,
    ).to(torch.bfloat16)


def make_wan22(target: Path, kind: str) -> Path:
    """kind: t2v (two experts), i2v (two experts, image-conditioned input channels) or ti2v (one DiT)."""
    from diffusers import WanImageToVideoPipeline, WanPipeline

    base = make_tiny_wan(target.parent / f".{target.name}-base")
    from diffusers import WanPipeline as _Base

    loaded = _Base.from_pretrained(base, local_files_only=True).components
    parts = {k: loaded[k] for k in ("tokenizer", "text_encoder", "vae", "scheduler")}
    if kind == "ti2v":
        pipe = WanPipeline(**parts, transformer=wan_transformer(), expand_timesteps=True)
    elif kind == "t2v":
        pipe = WanPipeline(**parts, transformer=wan_transformer(seed=1), transformer_2=wan_transformer(seed=2),
                           boundary_ratio=0.5)
    else:
        pipe = WanImageToVideoPipeline(**parts, transformer=wan_transformer(36, seed=1),
                                       transformer_2=wan_transformer(36, seed=2), boundary_ratio=0.5,
                                       image_encoder=None, image_processor=None)
    pipe.save_pretrained(target)
    return target


def _transformer_only(target: Path, pipeline: str, model: torch.nn.Module) -> Path:
    """model_index.json naming the pipeline, and the transformer folder (all a data-free run reads)."""
    model.to(torch.bfloat16).save_pretrained(target / "transformer")
    index = {"_class_name": pipeline, "_diffusers_version": "0.42.0",
             "transformer": ["diffusers", type(model).__name__]}
    (target / "model_index.json").write_text(json.dumps(index), encoding="utf-8")
    return target


def _example_tokenizer(max_length: int):
    from transformers import AutoTokenizer

    from tests.tiny_models import EXAMPLE_MODEL

    return AutoTokenizer.from_pretrained(EXAMPLE_MODEL, local_files_only=True, model_max_length=max_length)


def _tiny_clip(vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                        num_attention_heads=2, projection_dim=32, max_position_embeddings=77))


def flux_transformer():
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    return FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=2, num_single_layers=2,
                                  attention_head_dim=32, num_attention_heads=2, joint_attention_dim=32,
                                  pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(8, 12, 12))


def make_flux(target: Path) -> Path:
    return _transformer_only(target, "FluxPipeline", flux_transformer())


#: Settings of the tiny FLUX.1 generations: 32x32 pixels (8x8 packed latent tokens), 2 steps.
TINY_FLUX = {"height": 32, "width": 32, "num_inference_steps": 2,
             "max_sequence_length": 16, "seed": 1}


def make_flux_pipeline(target: Path) -> Path:
    """A complete FluxPipeline: CLIP and T5 text encoders (the repository's example tokenizer for both), a
    two-level VAE (scale factor 2) and the transformer of make_flux, so calibration capture runs it."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline
    from transformers import T5Config, T5EncoderModel

    tokenizer = _example_tokenizer(77)
    torch.manual_seed(0)
    clip = _tiny_clip(len(tokenizer))
    t5 = T5EncoderModel(T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
                                 relative_attention_num_buckets=8))
    vae = AutoencoderKL(down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        block_out_channels=[8, 16], latent_channels=16, norm_num_groups=8, sample_size=32)
    pipe = FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=clip, tokenizer=tokenizer,
                        text_encoder_2=t5, tokenizer_2=tokenizer, transformer=flux_transformer().to(torch.bfloat16))
    pipe.save_pretrained(target)
    return target


def hunyuan_video_transformer():
    from diffusers import HunyuanVideoTransformer3DModel

    torch.manual_seed(0)
    return HunyuanVideoTransformer3DModel(in_channels=16, out_channels=16, num_attention_heads=2,
                                          attention_head_dim=32, num_layers=2, num_single_layers=2,
                                          num_refiner_layers=1, patch_size=2, patch_size_t=1, text_embed_dim=32,
                                          pooled_projection_dim=32, rope_axes_dim=(8, 12, 12))


def make_hunyuan_video(target: Path) -> Path:
    return _transformer_only(target, "HunyuanVideoPipeline", hunyuan_video_transformer())


#: Settings of the tiny HunyuanVideo generations: 32x32 pixels, 5 frames (2 latent frames), 2 steps.
TINY_HUNYUAN_VIDEO = {"video_size": [32, 32], "video_length": 5, "infer_steps": 2, "seed": 1}


def make_hunyuan_video_pipeline(target: Path) -> Path:
    """A complete HunyuanVideoPipeline: a 2-layer Llama and a CLIP text encoder (the example tokenizer for both),
    a two-level VAE (never run: generations stop at the latents) and the transformer of make_hunyuan_video."""
    from diffusers import AutoencoderKLHunyuanVideo, FlowMatchEulerDiscreteScheduler, HunyuanVideoPipeline
    from transformers import LlamaConfig, LlamaModel

    tokenizer = _example_tokenizer(512)
    torch.manual_seed(0)
    llama = LlamaModel(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                   num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512))
    vae = AutoencoderKLHunyuanVideo(down_block_types=["HunyuanVideoDownBlock3D"] * 2,
                                    up_block_types=["HunyuanVideoUpBlock3D"] * 2, block_out_channels=[8, 16],
                                    layers_per_block=1, norm_num_groups=4, spatial_compression_ratio=2)
    pipe = HunyuanVideoPipeline(text_encoder=llama, tokenizer=tokenizer, vae=vae, text_encoder_2=_tiny_clip(len(tokenizer)),
                                tokenizer_2=_example_tokenizer(77), scheduler=FlowMatchEulerDiscreteScheduler(),
                                transformer=hunyuan_video_transformer().to(torch.bfloat16))
    pipe.save_pretrained(target)
    return target


def make_qwen_image_edit(target: Path) -> Path:
    from diffusers import QwenImageTransformer2DModel

    torch.manual_seed(0)
    # width 2 x 256 = 512: the W4A4 practice's dual-scale blocks are 512 input columns
    model = QwenImageTransformer2DModel(patch_size=2, in_channels=64, out_channels=16, num_layers=2,
                                        attention_head_dim=256, num_attention_heads=2, joint_attention_dim=32,
                                        axes_dims_rope=(64, 96, 96))
    return _transformer_only(target, "QwenImageEditPlusPipeline", model)


#: Settings of the tiny Qwen-Image-Edit generations: 64x64 pixels (4x4 packed latent tokens), 2 steps, true CFG.
TINY_QWEN_IMAGE_EDIT = {"height": 64, "width": 64, "num_inference_steps": 2, "true_cfg_scale": 2.0, "seed": 1}
#: The Plus pipeline resizes every input image to these areas (1024x1024 for the VAE, 384x384 for the text
#: encoder); the tiny tests shrink them so a generation stays a few hundred tokens.
TINY_QWEN_IMAGE_EDIT_AREAS = {"VAE_IMAGE_SIZE": 64 * 64, "CONDITION_IMAGE_SIZE": 56 * 56}


def tiny_qwen_image_edit_areas(monkeypatch) -> None:
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus

    for name, area in TINY_QWEN_IMAGE_EDIT_AREAS.items():
        monkeypatch.setattr(pipeline_qwenimage_edit_plus, name, area)


def make_qwen_image_edit_pipeline(target: Path) -> Path:
    """A complete QwenImageEditPlusPipeline (2509): a tiny Qwen2.5-VL text encoder with its processor (the
    character-level tokenizer and vision processors of tests/vlm, width 32 = the transformer's
    joint_attention_dim), a three-level QwenImage VAE (scale factor 8) and the transformer of make_qwen_image_edit."""
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImageEditPlusPipeline,
                           QwenImageTransformer2DModel)
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLProcessor

    from tests.vlm.tiny_vlm import TEXT, VL_PLACEHOLDERS, VL_SPECIAL, _qwen2_vision_processors, _template, _vl_ids, \
        make_tokenizer

    tokenizer = make_tokenizer(VL_SPECIAL)
    image, video = _qwen2_vision_processors(14)
    processor = Qwen2VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                                 chat_template=_template(VL_PLACEHOLDERS))
    config = Qwen2_5_VLConfig(
        text_config={**TEXT, "hidden_size": 32, "num_attention_heads": 2, "num_key_value_heads": 1,
                     "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}},
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1]),
        **_vl_ids(tokenizer))
    torch.manual_seed(0)
    text_encoder = Qwen2_5_VLForConditionalGeneration(config)
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1)
    transformer_dir = make_qwen_image_edit(target.parent / f".{target.name}-transformer")
    transformer = QwenImageTransformer2DModel.from_pretrained(transformer_dir / "transformer")
    pipe = QwenImageEditPlusPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text_encoder,
                                     tokenizer=tokenizer, processor=processor, transformer=transformer)
    pipe.save_pretrained(target)
    return target
