"""The `multimodal_vlm_modelslim_v1` service: VLM / Omni models, towers then decoder layers, layer by layer.

A run: validate the spec and the request (one device; a VLM adapter) → read the calibration set, check
every entry against the model's modalities and decode every media file (a broken file stops the run
before any model work) → build each sample with the model's processor and chat template → run the
layer-wise VLM pipeline (pipeline.py) with the savers. Always layer_wise; the seed is fixed (42) so runs
are repeatable.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import torch

from modelslim_core.errors import ConfigError
from modelslim_core.protocol.spec import processor_class
from modelslim_core.runtime.runner import Stage
from modelslim_core.service.base import QuantRequest, QuantService
from modelslim_core.service.run_context import build_run_context
from modelslim_vlm.dataset import load_vlm_dataset
from modelslim_vlm.dataset.media import decode_sample
from modelslim_vlm.models.base import VlmAdapter
from modelslim_vlm.pipeline import HostModelPlacement, VlmUnitPipeline
from modelslim_vlm.spec import RUNNER, VlmSpec, parse_vlm_spec

logger = logging.getLogger(__name__)

SEED = 42


class MultimodalVlmService(QuantService):
    apiversion = "multimodal_vlm_modelslim_v1"

    @classmethod
    def parse_spec(cls, spec: Any, path: str) -> VlmSpec:
        return parse_vlm_spec(spec, path)

    @classmethod
    def check_request(cls, spec: VlmSpec, request: QuantRequest) -> None:
        super().check_request(spec, request)
        indices = request.device.indices
        if indices and len(indices) > 1:
            raise ConfigError(
                f"--device {request.device} names {len(indices)} devices, but {cls.apiversion} runs on one device "
                "(its layer-wise pipeline is not data parallel).",
                f"pass a single device, e.g. --device {request.device.type}:{indices[0]}.",
            )

    @staticmethod
    def calibration_inputs(spec: VlmSpec, adapter: VlmAdapter, limit: int | None = None) -> list[dict[str, Any]]:
        """Read, check and decode the whole set (or its first `limit` entries: `msmodelslim analyze`), then
        build the processor inputs (no model is loaded yet)."""
        entries = load_vlm_dataset(spec.dataset, spec.default_text)[:limit]
        samples = [adapter.usable_sample(sample) for sample in entries]
        rate = adapter.audio_sampling_rate if any(s.audio is not None for s in samples) else None
        decoded = [decode_sample(sample, rate) for sample in samples]
        logger.info("Calibration set: %d samples (%s).", len(decoded), ", ".join(
            f"{sum(1 for s in samples if getattr(s, m) is not None)} {m}" for m in ("image", "audio", "video")))
        return [adapter.build_inputs(sample) for sample in decoded]

    def run(self, spec: VlmSpec, request: QuantRequest) -> None:
        self.check_request(spec, request)
        adapter = cast(VlmAdapter, request.adapter)
        if spec.runner != RUNNER:
            logger.warning("runner %s is not supported by %s; using %s.", spec.runner, self.apiversion, RUNNER)
        torch.manual_seed(SEED)
        needs_data = any(processor_class(config).needs_data(config) for config in spec.process)
        samples = self.calibration_inputs(spec, adapter) if needs_data else None
        if not needs_data:
            logger.info("No processor needs calibration data: the dataset is not read and no forward is run.")
        context = build_run_context(request, resumable=False)  # towers and recapture are not resumable
        logger.info("Runner: %s; compute dtype: %s; device: %s.", RUNNER, context.compute_dtype,
                    request.device.torch_device)
        stage = Stage("main", spec.process, spec.save, samples=samples)
        VlmUnitPipeline(context, HostModelPlacement(context)).run([stage])
