"""`quant_model_description.json`: one tag per tensor, then the global keys vLLM-Ascend reads.

`model_quant_type` is the highest-ranked type any linear proposes, using the reference's ranking so that
serving engines see the same value (W4A8_DYNAMIC is absent from the ranking on purpose: engines detect it
per layer). W8A8S, which the reference's v1 savers never write (its legacy v0 path names such checkpoints
W8A8S), ranks just above W8A8.
"""

from __future__ import annotations

from typing import Any

from modelslim_core.formats.tags import TAGS

#: The ranking, lowest first, from each tag's `rank` in the tag registry (formats/tags.py).
MODEL_QUANT_TYPE_RANK = TAGS.ranking()

FORMAT_VERSION = "1.0.0"


class Description:
    """Collects tensor tags in write order and the model-level proposals."""

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.model_quant_type = "Unknown"
        self.group_size = 0
        #: Model-level keys written after the tensor tags (kv_cache_type, kv_quant_type, fa_quant_type).
        self.globals: dict[str, str] = {}
        self.metadata: dict[str, Any] = {}
        self.optional: dict[str, Any] = {}

    def tag(self, name: str, tag: str) -> None:
        self.tags[name] = tag

    def propose(self, quant_type: str) -> None:
        if quant_type not in MODEL_QUANT_TYPE_RANK:
            return
        current = MODEL_QUANT_TYPE_RANK.index(self.model_quant_type) if self.model_quant_type in MODEL_QUANT_TYPE_RANK else -1
        if MODEL_QUANT_TYPE_RANK.index(quant_type) > current:
            self.model_quant_type = quant_type

    def state_dict(self) -> dict[str, Any]:
        return {"tags": self.tags, "model_quant_type": self.model_quant_type, "group_size": self.group_size,
                "metadata": self.metadata, "optional": self.optional, "globals": self.globals}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tags = dict(state["tags"])
        self.model_quant_type = state["model_quant_type"]
        self.group_size = state["group_size"]
        self.metadata = state["metadata"]
        self.optional = state["optional"]
        self.globals = dict(state.get("globals", {}))

    def to_json(self) -> dict[str, Any]:
        return {
            **self.tags,
            **self.globals,
            "version": FORMAT_VERSION,
            "model_quant_type": self.model_quant_type,
            "metadata": self.metadata,
            "group_size": self.group_size,
            "optional": self.optional,
        }
