"""`fa3_quant`: quantization of the query, key and value states entering the fused attention kernel
(docs/algorithms.md, "KV cache and FA3"; docs/formats.md).

Per branch (Q, K, V) either static per-head (`scope: per_head`, int8 or fp8_e4m3, symmetric, minmax): the
range of each head is its recall window — the narrowest interval holding ⌊ratio·N⌋ of the head's values —
accumulated over calibration samples (min of lows, max of highs) and MIN/MAX all-reduced across
data-parallel ranks, then applied when the runner re-runs the unit for the next unit's inputs; or dynamic
per token (`scope: per_token`): nothing is calibrated or saved.
Export per attention module `<attn>.fa_q|fa_k|fa_v.scale` float32 `[heads, 1]` and `.offset` zeros
`[heads, 1]` (int8 for INT8, float32 for FP8), tag `FAQuant`; the entry `<attn>.quant_type` (e.g. `INT8`);
and `fa_quant_type: FAKQuant` when some branch is static. Q has num_attention_heads heads, K and V
num_key_value_heads (the states before the GQA repeat).

Deviation from the reference, on purpose: its observer views `[B, H, S, D]` as `[H, -1]` without moving the
head dimension first, which mixes heads whenever B > 1; here each head's values are gathered correctly.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from modelslim_core.attention.fa_quant_type import format_quant_type
from modelslim_core.attention.processor import AttentionProcessor
from modelslim_core.attention.qkv_quant import FABranches, fa_tap, head_params
from modelslim_core.attention.sites import AttentionSite
from modelslim_core.attention.stats import HeadRecallWindow
from modelslim_core.attention.taps import Tap
from modelslim_core.protocol.qconfig import QConfig
from modelslim_core.protocol.validation import StrictModel
from modelslim_core.runtime.exports import ModuleExports, attach_exports
from modelslim_core.runtime.matching import LayerSelection
from modelslim_core.runtime.processor import ProcessorConfig

FA_TAG = "FAQuant"
FA_GLOBALS = {"fa_quant_type": "FAKQuant"}
BRANCHES = ("q", "k", "v")
#: Share of each head's values the recall window keeps (an adapter may set `fa3_recall_ratios`).
RECALL_RATIOS = {"q": 0.9999, "k": 0.9999, "v": 1.0}
DEFAULT_QCONFIG = QConfig(dtype="int8", scope="per_head", symmetric=True, method="minmax")
_SUPPORTED = ("int8 or fp8_e4m3, symmetric, method minmax, scope per_head (static) or per_token (dynamic); "
              "or mxfp8/mxfp4 scope per_block (dynamic)")
_MX_DTYPES = ("mxfp8", "mxfp4")


class FA3Details(StrictModel):
    fa_q: QConfig
    fa_k: QConfig
    fa_v: QConfig


def _check_branch(name: str, qc: QConfig) -> None:
    mx = qc.dtype in _MX_DTYPES and qc.scope == "per_block"
    scalar = qc.dtype in ("int8", "fp8_e4m3") and qc.scope in ("per_head", "per_token")
    if not (mx or scalar) or not qc.symmetric or qc.method != "minmax" or set(qc.ext) - {"axes"}:
        raise ValueError(f"{name} {qc.scheme} method {qc.method!r} is not supported for FA3; supported: {_SUPPORTED}")


class FA3QuantConfig(ProcessorConfig, LayerSelection):
    type: Literal["fa3_quant"] = "fa3_quant"
    qconfig: QConfig | None = Field(default=None, description="one quantizer for Q, K and V (default int8 per_head)")
    details: FA3Details | None = Field(default=None, description="fa_q/fa_k/fa_v quantizers (instead of qconfig)")

    @model_validator(mode="after")
    def _one_source(self) -> "FA3QuantConfig":
        if self.qconfig is not None and self.details is not None:
            raise ValueError("give either qconfig (all of Q, K, V) or details (fa_q, fa_k, fa_v), not both")
        for branch, qc in self.branch_qconfigs().items():
            _check_branch("qconfig" if self.details is None else f"details.fa_{branch}", qc)
        return self

    def branch_qconfigs(self) -> dict[str, QConfig]:
        if self.details is not None:
            return {"q": self.details.fa_q, "k": self.details.fa_k, "v": self.details.fa_v}
        qc = self.qconfig or DEFAULT_QCONFIG
        return {branch: qc for branch in BRANCHES}

    @property
    def static_branches(self) -> list[str]:
        return [b for b, qc in self.branch_qconfigs().items() if qc.scope == "per_head"]

    def export_types(self) -> frozenset[str]:
        return frozenset({FA_TAG}) if self.static_branches else frozenset()


class FA3QuantProcessor(AttentionProcessor):
    config_class = FA3QuantConfig
    config: FA3QuantConfig
    produces = "FA3 per-head scales"

    def __init__(self, config: FA3QuantConfig, context):
        super().__init__(config, context)
        self.qconfigs = config.branch_qconfigs()
        self.ratios = {**RECALL_RATIOS, **getattr(context.adapter, "fa3_recall_ratios", {})}
        self._windows: dict[str, dict[str, HeadRecallWindow]] = {}
        self._branches: dict[str, FABranches] = {}

    @classmethod
    def needs_data(cls, config: FA3QuantConfig) -> bool:
        return bool(config.static_branches)

    def observes(self, site: AttentionSite) -> bool:
        return bool(self.config.static_branches)

    def tap_for(self, site: AttentionSite) -> Tap:
        windows = self._windows[site.name] = {b: HeadRecallWindow(self.ratios[b]) for b in self.config.static_branches}

        def observe(query, key, value):
            for branch, states in (("q", query), ("k", key), ("v", value)):
                if branch in windows:
                    windows[branch].update(states)
            return query, key, value

        return observe

    def final_tap(self, site: AttentionSite) -> Tap:
        return fa_tap(self._branches.pop(site.name))

    def _heads(self, site: AttentionSite, branch: str) -> int:
        return site.num_heads if branch == "q" else site.num_kv_heads

    def synchronize(self) -> None:
        for site in self._sites:
            for branch, window in self._windows[site.name].items():
                window.synchronize((self._heads(site, branch),))

    def observed(self, site: AttentionSite) -> bool:
        return all(window.seen for window in self._windows[site.name].values())

    def finish_site(self, site: AttentionSite) -> None:
        windows = self._windows.pop(site.name)
        branches: FABranches = {b.upper(): (qc.dtype, None) for b, qc in self.qconfigs.items()}
        tensors = []
        for branch, window in windows.items():
            params = head_params(*window.range(), self.qconfigs[branch].dtype)
            branches[branch.upper()] = (params.dtype, params)
            offset_dtype = torch.int8 if params.dtype == "int8" else torch.float32
            tensors += [(f"fa_{branch}.scale", params.scale.float(), FA_TAG),
                        (f"fa_{branch}.offset", params.offset.to(offset_dtype), FA_TAG)]
        settings = {b.upper(): (qc.dtype, qc.scope != "per_head") for b, qc in self.qconfigs.items()}
        exports = ModuleExports(tensors=tensors, entries={"quant_type": format_quant_type(settings)},
                                globals=dict(FA_GLOBALS) if tensors else {})
        attach_exports(site.module, self.config.type, exports)
        self._branches[site.name] = branches
