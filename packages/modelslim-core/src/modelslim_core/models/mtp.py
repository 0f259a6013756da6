"""Multi-token-prediction (MTP) layers that releases store after the last decoder layer.

DeepSeek-V3/R1, GLM-4.5+, GLM-5 and Kimi-K2 checkpoints hold their MTP layer(s) as
`model.layers.<num_hidden_layers + i>.*`; transformers does not build them, so they are neither quantized nor
written, and the run says so once (a serving engine configured for MTP speculation needs them elsewhere).
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from modelslim_core.models.weights import SourceWeights

logger = logging.getLogger(__name__)


class MtpLayersMixin:
    """Reports the release's MTP tensors that the quantized model leaves out; put it first among the bases."""

    def mtp_keys(self) -> list[str]:
        """Checkpoint keys of the MTP layer(s): layer indices at or beyond num_hidden_layers."""
        layers = self.config_json.get("num_hidden_layers")
        source = SourceWeights(self.model_path)
        if not isinstance(layers, int) or not source.available:
            return []
        keys = []
        for name in source.names():
            parts = name.split(".")
            if len(parts) > 3 and parts[:2] == ["model", "layers"] and parts[2].isdigit() and int(parts[2]) >= layers:
                keys.append(name)
        return keys

    def _report_mtp(self) -> None:
        if getattr(self, "_mtp_reported", False):  # a quantized source loads through the skeleton: report once
            return
        self._mtp_reported = True
        keys = self.mtp_keys()
        if keys:
            logger.warning(
                "The checkpoint holds %d tensors of the multi-token-prediction layer (e.g. %s); it is not part of the "
                "model being quantized and is left out of the output (serve without MTP speculation).",
                len(keys), keys[0],
            )

    def load_model(self, dtype: torch.dtype) -> nn.Module:
        self._report_mtp()
        return super().load_model(dtype)

    def build_skeleton(self, dtype: torch.dtype) -> nn.Module:
        self._report_mtp()
        return super().build_skeleton(dtype)
