"""`online_quarot`: an online Hadamard rotation of the query and key handed to the attention kernel.

For every selected attention module, Q and K are multiplied by the same random Hadamard matrix R of order
head_dim (block-diagonal with `block_size` blocks when set) right before the attention kernel, after RoPE:
(Q·R)·(K·R)ᵀ = Q·Kᵀ, so the function is unchanged in float while the outliers of a few head channels are
spread over all of them, which is what makes FP8/MXFP4 attention quantization (fa3_quant) accurate. The
tap stays on the module for the rest of the run, so a fa3_quant placed after this processor calibrates
and simulates on rotated states. Data-free.

Saved: R as `<attn>.q_rot` and `<attn>.k_rot` (head_dim x head_dim, in the model's dtype, tagged FLOAT),
the tensors MindIE-SD multiplies Q and K by before its quantized attention. Rotating after RoPE rather
than before it (where the reference's calibration applies it, although the serving engine rotates at the
kernel) is on purpose: only there does the rotation leave the attention output unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator

from modelslim_core.attention.processor import AttentionProcessor
from modelslim_core.attention.sites import AttentionSite
from modelslim_core.attention.taps import Tap
from modelslim_core.errors import ModelError
from modelslim_core.rotation.hadamard import ROTATION_SEED, block_diagonal, has_hadamard, random_hadamard
from modelslim_core.runtime.exports import ModuleExports, attach_exports
from modelslim_core.runtime.matching import LayerSelection
from modelslim_core.runtime.processor import ProcessorConfig

ROTATION_SUFFIXES = ("q_rot", "k_rot")


class OnlineQuarotConfig(ProcessorConfig, LayerSelection):
    type: Literal["online_quarot"] = "online_quarot"
    block_size: int = Field(default=-1, description="-1 (one Hadamard of order head_dim) or a power of two")

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value != -1 and (value <= 0 or value & (value - 1)):
            raise ValueError(f"block_size must be -1 or a positive power of two, got {value}")
        return value


def qk_rotation(head_dim: int, block_size: int, where: str) -> torch.Tensor:
    """The float32 rotation of one attention's head channels (seeded, the same for every module)."""
    block = head_dim if block_size == -1 else block_size
    if head_dim % block or not has_hadamard(block):
        raise ModelError(f"{where}: head_dim {head_dim} has no Hadamard rotation with block size {block}.",
                         "set online_quarot.block_size to a power of two dividing head_dim, or exclude the module.")
    return block_diagonal(random_hadamard(block, ROTATION_SEED, f"{where} head_dim rotation"), head_dim)


def rotation_tap(rotation: torch.Tensor) -> Tap:
    def rotate(query, key, value):
        r = rotation.to(device=query.device, dtype=query.dtype)
        return query @ r, key @ r, value

    return rotate


class OnlineQuarotProcessor(AttentionProcessor):
    config_class = OnlineQuarotConfig
    config: OnlineQuarotConfig
    produces = "Q/K rotations"

    def __init__(self, config: OnlineQuarotConfig, context):
        super().__init__(config, context)
        self._rotations: dict[str, torch.Tensor] = {}

    @classmethod
    def needs_data(cls, config: OnlineQuarotConfig) -> bool:
        return False

    def observes(self, site: AttentionSite) -> bool:
        return False

    def tap_for(self, site: AttentionSite) -> Tap:
        rotation = self._rotations[site.name] = qk_rotation(site.head_dim, self.config.block_size, site.name)
        return rotation_tap(rotation)

    def final_tap(self, site: AttentionSite) -> Tap:
        return rotation_tap(self._rotations.pop(site.name))

    def finish_site(self, site: AttentionSite) -> None:
        dtype = self.context.adapter.source_dtype or torch.float32
        rotation = self._rotations[site.name].to(dtype).contiguous()
        tensors = [(suffix, rotation.clone(), "FLOAT") for suffix in ROTATION_SUFFIXES]
        attach_exports(site.module, self.config.type, ModuleExports(tensors=tensors))

    def outputs_stale(self, unit) -> bool:
        return False  # exact in float: the unit's outputs do not change
