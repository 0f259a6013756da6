"""Tiny multimodal checkpoints of today's VLM families, from transformers' config classes (never downloaded),
with working processors built from their settings (tests/vlm/tiny_vlm.py has the shared tokenizer/template)."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.vlm.tiny_vlm import TEXT, VL_SPECIAL, _qwen3_vl_processor, _save, _vl_ids, make_tokenizer

#: Qwen3.5 hybrid text model: layers 0-2 linear attention (Gated DeltaNet), layer 3 full attention.
QWEN3_5_TEXT = {**TEXT, "num_hidden_layers": 4, "head_dim": 16, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
                "linear_num_key_heads": 2, "linear_num_value_heads": 4,
                "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                    "mrope_interleaved": True, "partial_rotary_factor": 1.0}}
QWEN3_5_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64)


def make_qwen3_5(target: Path, moe: bool = False, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    from transformers import (Qwen3_5Config, Qwen3_5ForConditionalGeneration, Qwen3_5MoeConfig,
                              Qwen3_5MoeForConditionalGeneration)

    tokenizer = make_tokenizer(VL_SPECIAL)
    text = dict(QWEN3_5_TEXT)
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32)
        config = Qwen3_5MoeConfig(text_config=text, vision_config=QWEN3_5_VISION, **_vl_ids(tokenizer))
    else:
        config = Qwen3_5Config(text_config=text, vision_config=QWEN3_5_VISION, **_vl_ids(tokenizer))
    torch.manual_seed(seed)
    model = (Qwen3_5MoeForConditionalGeneration if moe else Qwen3_5ForConditionalGeneration)(config)
    return _save(model, _qwen3_vl_processor(tokenizer), target, dtype, seed)


def add_tensors(weights: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Append tensors transformers does not build (a release's MTP layers) to a saved checkpoint file."""
    from safetensors.torch import load_file, save_file

    saved = load_file(weights)
    saved.update(tensors)
    save_file(saved, weights, metadata={"format": "pt"})


GLM_SPECIAL = ["<|begin_of_image|>", "<|end_of_image|>", "<|image|>", "<|begin_of_video|>", "<|end_of_video|>",
               "<|video|>"]
GLM_PLACEHOLDERS = {"IMAGE": "<|begin_of_image|><|image|><|end_of_image|>",
                    "VIDEO": "<|begin_of_video|><|video|><|end_of_video|>", "AUDIO": ""}
#: GLM-4.5-Air-style text model: dense layer 0, MoE layer 1 (4 routed experts, 1 shared), partial M-RoPE.
GLM_TEXT = {**TEXT, "head_dim": 16, "model_type": "glm4v_moe_text", "n_routed_experts": 4, "num_experts_per_tok": 2,
            "moe_intermediate_size": 32, "first_k_dense_replace": 1, "n_shared_experts": 1,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2],
                                "partial_rotary_factor": 0.5}}
GLM_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                  spatial_merge_size=2, temporal_patch_size=2, image_size=56)


def make_glm46v(target: Path, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """GLM-4.6V as its release is laid out: config model_type `glm4v_moe` (Glm4vMoeForConditionalGeneration, a
    GLM-4.5-Air-style MoE text model), with GLM's own image/video processors."""
    from transformers import Glm4vMoeConfig, Glm4vMoeForConditionalGeneration, Glm4vProcessor
    from transformers.models.glm4v.image_processing_glm4v import Glm4vImageProcessor
    from transformers.models.glm4v.video_processing_glm4v import Glm4vVideoProcessor

    from tests.vlm.tiny_vlm import _template

    tokenizer = make_tokenizer(GLM_SPECIAL)
    pixels = 28 * 28
    image = Glm4vImageProcessor(patch_size=14, merge_size=2, temporal_patch_size=2,
                                size={"shortest_edge": pixels * 4, "longest_edge": pixels * 16})
    video = Glm4vVideoProcessor(patch_size=14, merge_size=2, temporal_patch_size=2, fps=2.0,
                                size={"shortest_edge": pixels * 4, "longest_edge": pixels * 64})
    processor = Glm4vProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                               chat_template=_template(GLM_PLACEHOLDERS))
    ids = tokenizer.convert_tokens_to_ids
    config = Glm4vMoeConfig(text_config=GLM_TEXT, vision_config=GLM_VISION, image_token_id=ids("<|image|>"),
                            video_token_id=ids("<|video|>"), image_start_token_id=ids("<|begin_of_image|>"),
                            image_end_token_id=ids("<|end_of_image|>"), video_start_token_id=ids("<|begin_of_video|>"),
                            video_end_token_id=ids("<|end_of_video|>"))
    torch.manual_seed(seed)
    return _save(Glm4vMoeForConditionalGeneration(config), processor, target, dtype, seed)


INTERNVL_TOKENS = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
                   "video_token": "<video>"}


def make_internvl(target: Path, moe: bool = False, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """InternVL3.5 in the Hugging Face layout: InternViT (56 px, 14 px patches: 4 tokens per tile after the pixel
    shuffle) and a Qwen3 (or Qwen3-MoE) language model."""
    from transformers import GotOcr2ImageProcessor, InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor
    from transformers.models.internvl.video_processing_internvl import InternVLVideoProcessor

    from tests.vlm.tiny_vlm import _template

    tokenizer = make_tokenizer(list(INTERNVL_TOKENS.values()), extra_special_tokens=INTERNVL_TOKENS)
    image = GotOcr2ImageProcessor(size={"height": 56, "width": 56}, crop_to_patches=False)
    video = InternVLVideoProcessor(size={"height": 56, "width": 56}, num_frames=2)
    processor = InternVLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video, image_seq_length=4,
                                  chat_template=_template({"IMAGE": "<IMG_CONTEXT>", "VIDEO": "<video>", "AUDIO": ""}))
    text = {**TEXT, "model_type": "qwen3", "head_dim": 16}
    if moe:
        text.update(model_type="qwen3_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                    decoder_sparse_step=1)
    vision = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  image_size=[56, 56], patch_size=[14, 14])
    config = InternVLConfig(text_config=text, vision_config=vision, image_token_id=tokenizer.context_image_token_id,
                            image_seq_length=4)
    torch.manual_seed(seed)
    return _save(InternVLForConditionalGeneration(config), processor, target, dtype, seed)


def make_qwen3_omni(target: Path, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """A Qwen3-Omni release: a tiny thinker (audio tower, DeepStack vision tower, Qwen3-MoE language model) under
    `thinker.` with a full `qwen3_omni_moe` config.json."""
    from transformers import Qwen3OmniMoeProcessor, Qwen3OmniMoeThinkerConfig, Qwen3OmniMoeThinkerForConditionalGeneration

    from tests.vlm.tiny_vlm import as_full_omni_checkpoint, omni_processor

    tokenizer, processor = omni_processor(Qwen3OmniMoeProcessor, 16)
    ids = tokenizer.convert_tokens_to_ids
    text = {**TEXT, "head_dim": 16, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
            "decoder_sparse_step": 1, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                          "mrope_section": [2, 3, 3], "mrope_interleaved": True}}
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0])
    audio_config = dict(num_mel_bins=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
                        output_dim=64, max_source_positions=1500, n_window=50, downsample_hidden_size=16,
                        conv_chunksize=50, n_window_infer=100)
    config = Qwen3OmniMoeThinkerConfig(
        text_config=text, vision_config=vision, audio_config=audio_config, audio_token_id=ids("<|AUDIO|>"),
        image_token_id=ids("<|IMAGE|>"), video_token_id=ids("<|VIDEO|>"), audio_start_token_id=ids("<|audio_bos|>"),
        vision_start_token_id=ids("<|vision_bos|>"), user_token_id=ids("u"))
    torch.manual_seed(seed)
    _save(Qwen3OmniMoeThinkerForConditionalGeneration(config), processor, target, dtype, seed)
    return as_full_omni_checkpoint(target, config, "Qwen3OmniMoeConfig", "Qwen3OmniMoeForConditionalGeneration")


KIMI_SPECIAL = ["<|media_begin|>", "<|media_content|>", "<|media_end|>", "<|media_pad|>",
                "<|kimi_k25_video_placeholder|>"]
#: Kimi-K2 language model (DeepSeek-V3: MLA, dense layer 0, MoE layer 1 with 4 routed experts and a shared one).
KIMI_TEXT = {**TEXT, "model_type": "deepseek_v3", "num_key_value_heads": 4, "q_lora_rank": 32, "kv_lora_rank": 32,
             "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "n_routed_experts": 4,
             "num_experts_per_tok": 2, "n_shared_experts": 1, "n_group": 1, "topk_group": 1, "moe_intermediate_size": 32,
             "first_k_dense_replace": 1}
KIMI_VISION = dict(patch_size=14, pos_emb_height=8, pos_emb_width=8, num_attention_heads=2, num_hidden_layers=2,
                   hidden_size=32, intermediate_size=64)


def kimi_k25_release_name(name: str) -> str:
    """What transformers' save writes, as Kimi-K2.5 releases name it: its inverse renames the language model's
    `layers` to `blocks` and leaves the projector's norm under `model.`."""
    name = name.replace("language_model.model.blocks.", "language_model.model.layers.")
    return name.removeprefix("model.") if name.startswith("model.mm_projector.") else name


def make_kimi_k25(target: Path, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """Kimi-K2.5 as its release is laid out (`language_model.model.layers.*`, `vision_tower.encoder.blocks.N.wqkv`,
    `mm_projector.proj.0/2`), with the model's own image processor (14 px patches, 2x2 merge)."""
    from safetensors.torch import load_file, save_file
    from transformers import Kimi_K25Config, Kimi_K25ForConditionalGeneration, Kimi_K25Processor
    from transformers.models.kimi_k25.image_processing_kimi_k25 import Kimi_K25ImageProcessor
    from transformers.models.kimi_k25.video_processing_kimi_k25 import Kimi_K25VideoProcessor

    from tests.vlm.tiny_vlm import _template

    tokenizer = make_tokenizer(KIMI_SPECIAL)
    image = Kimi_K25ImageProcessor(size={"max_height": 112, "max_width": 112}, max_patches=64)
    video = Kimi_K25VideoProcessor(size={"max_height": 112, "max_width": 112})
    processor = Kimi_K25Processor(image_processor=image, tokenizer=tokenizer, video_processor=video, chat_template=_template(
        {"IMAGE": "<|media_begin|>image<|media_content|><|media_pad|><|media_end|>", "VIDEO": "", "AUDIO": ""}))
    ids = tokenizer.convert_tokens_to_ids
    config = Kimi_K25Config(text_config=KIMI_TEXT, vision_config=KIMI_VISION, projection_hidden_size=32,
                            image_token_id=ids("<|media_pad|>"), video_token_id=ids("<|kimi_k25_video_placeholder|>"),
                            vision_start_token_id=ids("<|media_begin|>"), vision_end_token_id=ids("<|media_end|>"),
                            tie_word_embeddings=False)
    torch.manual_seed(seed)
    _save(Kimi_K25ForConditionalGeneration(config), processor, target, dtype, seed)
    for weights in target.glob("*.safetensors"):
        tensors = load_file(weights)
        save_file({kimi_k25_release_name(k): v for k, v in tensors.items()}, weights, metadata={"format": "pt"})
    return target
