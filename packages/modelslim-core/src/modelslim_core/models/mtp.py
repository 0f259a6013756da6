"""Multi-token-prediction (MTP) layers that releases store beside the decoder layers transformers builds.

Where releases keep them:
- after the last decoder layer, as `model.layers.<num_hidden_layers + i>.*` (DeepSeek-V3/R1, GLM-4.5+, GLM-5,
  Kimi-K2, Step-3.5: `mtp_after_layers`);
- under their own prefix (`mtp.*` in Qwen3-Next / Qwen3.5 / DeepSeek-V4, `model.mtp.*` in LongCat-Flash:
  `mtp_prefixes`).
transformers does not build them, so they are neither calibrated nor quantized. vLLM-Ascend serves them as the
speculative draft and loads them unquantized, but its quantization config looks every draft linear up in
quant_model_description.json (a missing entry is read as "quantized"). So the savers copy these tensors from
the source checkpoint as they are (dequantized when the release stores them FP8 / INT4, in the model's dtype)
and tag them FLOAT; the run says how many it carried over.
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch
from torch import nn

from modelslim_core.models.weights import SourceWeights

logger = logging.getLogger(__name__)


class MtpLayersMixin:
    """Finds the release's MTP tensors and hands them to the savers (`carried_source_tensors`); put it first
    among the bases."""

    #: MTP layers are numbered after the decoder layers (`model.layers.<num_hidden_layers + i>`).
    mtp_after_layers: ClassVar[bool] = True
    #: Checkpoint name prefixes holding the MTP module(s).
    mtp_prefixes: ClassVar[tuple[str, ...]] = ()

    def _num_decoder_layers(self) -> int | None:
        for holder in (self.config_json, self.config_json.get("text_config") or {}):
            layers = holder.get("num_hidden_layers")
            if isinstance(layers, int):
                return layers
        return None

    def _is_mtp_key(self, name: str, layers: int | None) -> bool:
        if name.startswith(self.mtp_prefixes) if self.mtp_prefixes else False:
            return True
        if not self.mtp_after_layers or layers is None:
            return False
        parts = name.split(".")
        # `model.layers.N.*`, and `model.language_model.layers.N.*` in a multimodal release
        for start in (1, 2):
            if len(parts) > start + 2 and parts[start] == "layers" and parts[start + 1].isdigit():
                return int(parts[start + 1]) >= layers
        return False

    def mtp_keys(self) -> list[str]:
        """Checkpoint keys of the MTP layer(s), as the release names them (dequantized names for FP8 sources)."""
        source = SourceWeights(self.checkpoint_dir)
        if not source.available:
            return []
        layers = self._num_decoder_layers()
        return [name for name in source.names() if self._is_mtp_key(name, layers)]

    def carried_source_tensors(self) -> list[str]:
        """Source tensors the model does not hold that the output must carry unchanged (tagged FLOAT)."""
        keys = self.mtp_keys()
        if keys:
            logger.info("Carrying %d tensors of the multi-token-prediction layer(s) (e.g. %s) over to the output "
                        "unquantized, as vLLM-Ascend loads its MTP draft.", len(keys), keys[0])
        return keys

    def carried_source_prefixes(self) -> list[str]:
        """The name prefixes of the carried tensors (one per MTP layer or module), recorded in the description so
        readers know these FLOAT tensors are not part of the quantized model."""
        prefixes = set()
        layers = self._num_decoder_layers()
        for name in self.mtp_keys():
            prefix = next((p for p in self.mtp_prefixes if name.startswith(p)), None)
            if prefix is None:
                parts = name.split(".")
                start = parts.index("layers")
                prefix = ".".join(parts[: start + 2]) + "."
            prefixes.add(prefix)
        return sorted(prefixes) if layers is not None or self.mtp_prefixes else []

    def _report_mtp(self) -> None:
        if getattr(self, "_mtp_reported", False):  # a quantized source loads through the skeleton: report once
            return
        self._mtp_reported = True
        keys = self.mtp_keys()
        if keys:
            logger.info("The checkpoint holds %d tensors of the multi-token-prediction layer(s); they are not "
                        "calibrated and are saved float.", len(keys))

    def load_model(self, dtype: torch.dtype) -> nn.Module:
        self._report_mtp()
        return super().load_model(dtype)

    def build_skeleton(self, dtype: torch.dtype) -> nn.Module:
        self._report_mtp()
        return super().build_skeleton(dtype)
