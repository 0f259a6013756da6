"""Qwen2 and Qwen2.5 dense models, and the releases built on the same architecture (config.json `qwen2`):
Qwen1.5, QwQ-32B (Qwen2 practices) and the DeepSeek-R1 distillations of Qwen2.5."""

from __future__ import annotations

import functools

import torch
from torch import nn

from modelslim_core.models.base import ModelAdapter
from modelslim_core.models.checkpoint_names import CheckpointNames


class NativeQwen2Loading(ModelAdapter):
    """Builds plain Qwen2 checkpoints with ModelSlim's own module (models/qwen2_native.py, bit-identical to
    transformers' and much cheaper to import); any other config, or a checkpoint published quantized, keeps the
    base class's transformers path."""

    @functools.cached_property
    def native(self) -> bool:
        from modelslim_core.models.qwen2_native import native_config_ok  # noqa: PLC0415

        return native_config_ok(self.config_json)

    @functools.cached_property
    def checkpoint_names(self) -> CheckpointNames:
        """transformers renames nothing when loading a Qwen2 checkpoint (tests/families/test_qwen2_native.py checks
        it): the names are the module paths, without importing its conversion rules."""
        return CheckpointNames([], []) if self.native else super().checkpoint_names

    def build_skeleton(self, dtype: torch.dtype) -> nn.Module:
        if not self.native:
            return super().build_skeleton(dtype)
        from transformers import AutoConfig  # noqa: PLC0415 - the config module only, no model code

        from modelslim_core.models.qwen2_native import Qwen2ForCausalLM  # noqa: PLC0415
        from modelslim_core.models.weights import parameters_on_meta  # noqa: PLC0415

        config = AutoConfig.from_pretrained(self.model_path, local_files_only=True)
        config.use_cache = False
        config._attn_implementation = "sdpa"  # what transformers sets at load; attention taps switch it
        with parameters_on_meta():
            model = Qwen2ForCausalLM(config, meta=True)
        model.eval()
        model.requires_grad_(False)
        return model

    def load_model(self, dtype: torch.dtype) -> nn.Module:
        from modelslim_core.models.weights import SourceWeights  # noqa: PLC0415

        if not self.native:
            return super().load_model(dtype)
        source = SourceWeights(self.model_path)
        if source.quantized:
            return self.load_dequantized(source, dtype)
        return self.materialized(self.build_skeleton(dtype), source, dtype)


class Qwen2Adapter(NativeQwen2Loading):
    family = "qwen2"
    model_types = ("Qwen2-7B", "Qwen2-7B-Instruct", "Qwen2-72B", "Qwen2-72B-Instruct", "QwQ-32B", "Qwen-QwQ-32B",
                   "Qwen1.5-110B")
    model_type_prefixes = ("Qwen2-", "Qwen1.5-", "QwQ-", "Qwen-QwQ-")
    hf_model_types = ("qwen2",)


class Qwen2_5Adapter(NativeQwen2Loading):
    family = "qwen2_5"
    model_types = (
        "Qwen2.5-7B-Instruct",
        "Qwen2.5-32B-Instruct",
        "Qwen2.5-72B-Instruct",
        "Qwen2.5-Coder-7B-Instruct",
        "DeepSeek-R1-Distill-Qwen-1.5B",
        "DeepSeek-R1-Distill-Qwen-7B",
        "DeepSeek-R1-Distill-Qwen-14B",
        "DeepSeek-R1-Distill-Qwen-32B",
    )
    model_type_prefixes = ("Qwen2.5-", "DeepSeek-R1-Distill-Qwen-")
    hf_model_types = ("qwen2",)
