"""Tiny Qwen VL / Omni checkpoints with working processors, built offline (no hub).

The tokenizer is a character-level WordLevel model over printable ASCII plus the special tokens each
processor needs; image, video and audio processors are constructed from their settings; the chat template
is our own minimal one (media placeholders, then the text, generation prompt optional).
"""

from __future__ import annotations

from pathlib import Path

import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}{{ IMAGE }}{% elif c.type == 'video' %}{{ VIDEO }}"
    "{% elif c.type == 'audio' %}{{ AUDIO }}{% elif c.type == 'text' %}{{ c.text }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
VL_PLACEHOLDERS = {"IMAGE": "<|vision_start|><|image_pad|><|vision_end|>",
                   "VIDEO": "<|vision_start|><|video_pad|><|vision_end|>", "AUDIO": ""}
OMNI_PLACEHOLDERS = {"IMAGE": "<|vision_bos|><|IMAGE|><|vision_eos|>", "VIDEO": "<|vision_bos|><|VIDEO|><|vision_eos|>",
                     "AUDIO": "<|audio_bos|><|AUDIO|><|audio_eos|>"}
COMMON_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VL_SPECIAL = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
OMNI_SPECIAL = ["<|vision_bos|>", "<|vision_eos|>", "<|audio_bos|>", "<|audio_eos|>", "<|IMAGE|>", "<|VIDEO|>", "<|AUDIO|>"]
VOCAB = 160  # 95 printable characters + special tokens, rounded up
TEXT = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=2048)
VISION_PIXELS = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)


def _template(placeholders: dict[str, str]) -> str:
    text = CHAT_TEMPLATE
    for key, value in placeholders.items():
        text = text.replace("{{ " + key + " }}", value)
    return text


def make_tokenizer(special: list[str], **extra):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {chr(c): i for i, c in enumerate(range(32, 127))}
    for token in COMMON_SPECIAL + special:
        vocab[token] = len(vocab)
    assert len(vocab) <= VOCAB
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="?"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.add_special_tokens(COMMON_SPECIAL + special)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", **extra)


def _save(model: torch.nn.Module, processor, target: Path, dtype: torch.dtype, seed: int) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():  # random biases so bias handling is exercised
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0, 0.02)
    model.to(dtype).save_pretrained(target)
    processor.save_pretrained(target)
    return target


def _qwen2_vision_processors(patch: int):
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    pixels = {k: v * (patch * patch) // (14 * 14) for k, v in VISION_PIXELS.items()}
    image = Qwen2VLImageProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, **pixels)
    video = Qwen2VLVideoProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2, fps=2.0, min_frames=2,
                                  max_frames=4, **pixels)
    return image, video


def _vl_ids(tokenizer) -> dict[str, int]:
    ids = tokenizer.convert_tokens_to_ids
    return dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"))


def make_qwen2_5_vl(target: Path, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    tokenizer = make_tokenizer(VL_SPECIAL)
    image, video = _qwen2_vision_processors(14)
    processor = Qwen2_5_VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                                    chat_template=_template(VL_PLACEHOLDERS))
    config = Qwen2_5_VLConfig(
        text_config={**TEXT, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}},
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1]),
        **_vl_ids(tokenizer))
    torch.manual_seed(seed)
    return _save(Qwen2_5_VLForConditionalGeneration(config), processor, target, dtype, seed)


def qwen3_vl_config(tokenizer, moe: bool = False):
    from transformers import Qwen3VLConfig, Qwen3VLMoeConfig

    text = {**TEXT, "head_dim": 16,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                "mrope_interleaved": True}}
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                  spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0])
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, decoder_sparse_step=1)
        return Qwen3VLMoeConfig(text_config=text, vision_config=vision, **_vl_ids(tokenizer))
    return Qwen3VLConfig(text_config=text, vision_config=vision, **_vl_ids(tokenizer))


def _qwen3_vl_processor(tokenizer):
    from transformers import Qwen3VLProcessor
    from transformers.models.qwen2_vl import Qwen2VLImageProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    pixels = {k: v * 256 // 196 for k, v in VISION_PIXELS.items()}
    image = Qwen2VLImageProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, **pixels)
    video = Qwen3VLVideoProcessor(patch_size=16, merge_size=2, temporal_patch_size=2, fps=2.0, min_frames=2,
                                  max_frames=4, size={"shortest_edge": pixels["min_pixels"], "longest_edge": pixels["max_pixels"] * 4})
    return Qwen3VLProcessor(image_processor=image, tokenizer=tokenizer, video_processor=video,
                            chat_template=_template(VL_PLACEHOLDERS))


def make_qwen3_vl(target: Path, dtype: torch.dtype = torch.bfloat16, seed: int = 0, moe: bool = False) -> Path:
    from transformers import Qwen3VLForConditionalGeneration, Qwen3VLMoeForConditionalGeneration

    tokenizer = make_tokenizer(VL_SPECIAL)
    config = qwen3_vl_config(tokenizer, moe)
    torch.manual_seed(seed)
    model = (Qwen3VLMoeForConditionalGeneration if moe else Qwen3VLForConditionalGeneration)(config)
    return _save(model, _qwen3_vl_processor(tokenizer), target, dtype, seed)


def make_qwen2_5_omni_thinker(target: Path, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    from transformers import (Qwen2_5OmniProcessor, Qwen2_5OmniThinkerConfig,
                              Qwen2_5OmniThinkerForConditionalGeneration, WhisperFeatureExtractor)

    names = dict(image_token="<|IMAGE|>", video_token="<|VIDEO|>", audio_token="<|AUDIO|>",
                 vision_bos_token="<|vision_bos|>", vision_eos_token="<|vision_eos|>",
                 audio_bos_token="<|audio_bos|>", audio_eos_token="<|audio_eos|>")
    tokenizer = make_tokenizer(OMNI_SPECIAL, extra_special_tokens=names)
    image, video = _qwen2_vision_processors(14)
    audio = WhisperFeatureExtractor(feature_size=16, sampling_rate=16000, hop_length=160, chunk_length=2, n_fft=400)
    processor = Qwen2_5OmniProcessor(image_processor=image, video_processor=video, feature_extractor=audio,
                                     tokenizer=tokenizer, chat_template=_template(OMNI_PLACEHOLDERS))
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5OmniThinkerConfig(
        text_config={**TEXT, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}},
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=56, fullatt_block_indexes=[1]),
        audio_config=dict(num_mel_bins=16, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
                          output_dim=64, max_source_positions=1500, n_window=50),
        audio_token_index=ids("<|AUDIO|>"), image_token_index=ids("<|IMAGE|>"), video_token_index=ids("<|VIDEO|>"),
        audio_start_token_id=ids("<|audio_bos|>"), audio_end_token_id=ids("<|audio_eos|>"),
        vision_start_token_id=ids("<|vision_bos|>"), vision_end_token_id=ids("<|vision_eos|>"),
        user_token_id=ids("u"))
    torch.manual_seed(seed)
    _save(Qwen2_5OmniThinkerForConditionalGeneration(config), processor, target, dtype, seed)
    return as_full_omni_checkpoint(target, config)


def as_full_omni_checkpoint(target: Path, thinker_config, full_config: str = "Qwen2_5OmniConfig",
                            architecture: str = "Qwen2_5OmniForConditionalGeneration") -> Path:
    """Lay the thinker out like an Omni release (Qwen2.5-Omni by default): a full config.json (talker and vocoder
    configs at their defaults, no weights for them) and every tensor under `thinker.`."""
    import transformers
    from safetensors.torch import load_file, save_file

    weights = target / "model.safetensors"
    tensors = load_file(weights)
    save_file({f"thinker.{name}": tensor for name, tensor in tensors.items()}, weights, metadata={"format": "pt"})
    full = getattr(transformers, full_config)(thinker_config=thinker_config.to_dict(), enable_audio_output=False)
    full.architectures = [architecture]
    full.save_pretrained(target)
    return target
