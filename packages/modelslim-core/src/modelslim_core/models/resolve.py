"""Choosing the adapter for a user's `--model_type`.

Order: an adapter that lists the exact name; then the family whose name prefix matches (longest first);
then the family that understands config.json's `model_type`; else the `default` adapter. A name or
prefix match is accepted only when the checkpoint's architecture is one the family understands, so
`Qwen3-30B-A3B` (a MoE checkpoint) never lands on the dense Qwen3 adapter.
"""

from __future__ import annotations

import logging
from pathlib import Path

from modelslim_core import registry
from modelslim_core.models.base import ModelAdapter, peek_model_type

logger = logging.getLogger(__name__)


def _adapter_classes() -> dict[str, type[ModelAdapter]]:
    return {name: registry.load(registry.MODEL_ADAPTERS, name) for name in registry.names(registry.MODEL_ADAPTERS)}


def _compatible(cls: type[ModelAdapter], hf_model_type: str | None) -> bool:
    return not cls.hf_model_types or hf_model_type in cls.hf_model_types


def adapter_class_for(model_type: str, hf_model_type: str | None) -> tuple[type[ModelAdapter], str]:
    """The adapter class and a short reason for the choice."""
    classes = _adapter_classes()
    for cls in classes.values():
        if model_type in cls.model_types and _compatible(cls, hf_model_type):
            return cls, f"model type {model_type!r} is a verified {cls.family} model"
    prefixed = [
        (len(prefix), cls)
        for cls in classes.values()
        for prefix in cls.model_type_prefixes
        if model_type.lower().startswith(prefix.lower()) and _compatible(cls, hf_model_type)
    ]
    if prefixed:
        cls = max(prefixed, key=lambda item: item[0])[1]
        return cls, f"model type {model_type!r} belongs to the {cls.family} family"
    # Several families can share an architecture (Kimi-K2 is DeepSeek-V3's): the one named after it goes first.
    for cls in sorted(classes.values(), key=lambda c: c.family != hf_model_type):
        if hf_model_type and hf_model_type in cls.hf_model_types and cls.model_type_prefixes:
            return cls, f"config.json model_type {hf_model_type!r} is a {cls.family} architecture"
    return classes["default"], f"no family adapter matches {model_type!r}; using the generic adapter"


def _directory_claim(model_path: Path) -> type[ModelAdapter] | None:
    """An adapter that recognises the directory itself (e.g. any diffusers pipeline), for unmatched names."""
    for cls in _adapter_classes().values():
        claims = getattr(cls, "claims_directory", None)
        if claims is not None and claims(model_path):
            return cls
    return None


def create_adapter(model_type: str, model_path: Path, trust_remote_code: bool) -> ModelAdapter:
    """Pick the adapter (config.json's model_type helps when present) and construct it; the adapter checks
    that the directory holds what it needs (config.json for LLMs, model_index.json for diffusers pipelines)."""
    hf_model_type = peek_model_type(model_path)
    cls, reason = adapter_class_for(model_type, hf_model_type)
    claimed = _directory_claim(model_path) if cls.family == "default" else None
    if claimed is not None:
        cls, reason = claimed, f"{model_path} is a {claimed.family} directory that no family adapter claims"
    logger.info("Model adapter: %s (%s).", cls.family, reason)
    return cls(model_type, model_path, trust_remote_code)
