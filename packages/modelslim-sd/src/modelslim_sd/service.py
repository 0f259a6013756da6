"""The `multimodal_sd_modelslim_v1` service: diffusion transformers, layer by layer, from captured calls.

A run: check everything that needs no model (spec, inference settings, dump directory, whether any
processor needs data) → obtain calibration data only when a processor needs it (reuse or capture, see
calibration.py) → run the layer-wise unit pipeline over the DiT's blocks with the recorded calls as
samples → savers (typically `mindie_format_saver`). Always layer_wise, on one device.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from modelslim_core import registry
from modelslim_core.errors import ConfigError
from modelslim_core.protocol.spec import processor_class
from modelslim_core.runtime.runner import Stage
from modelslim_core.service.base import QuantRequest, QuantService
from modelslim_core.service.run_context import build_run_context, compute_dtype_for
from modelslim_sd.adapter import DiffusionAdapter
from modelslim_sd.calibration import obtain_calibration
from modelslim_sd.prompt_sets import with_prompt_set
from modelslim_sd.spec import SdSpec, parse_sd_spec

logger = logging.getLogger(__name__)

RUNNER = "layer_wise"


@dataclass
class SdPlan:
    """What a run will do, decided before any model is loaded."""

    inference: Any
    needs_data: bool
    dump_dir: Path


def _dump_dir(spec: SdSpec, request: QuantRequest) -> Path:
    text = spec.dump.dump_data_dir
    path = Path(text).expanduser().resolve() if text else request.save_path
    model_path = request.model_path.resolve()
    if path == model_path or model_path in path.parents:
        raise ConfigError(
            f"spec.multimodal_sd_config.dump_config.dump_data_dir {text!r} lies in the model directory; "
            "ModelSlim never writes into --model_path.",
            "leave it empty (calibration data goes to save_path) or choose a directory outside the model.",
        )
    return path


class MultimodalSdService(QuantService):
    apiversion = "multimodal_sd_modelslim_v1"

    @classmethod
    def parse_spec(cls, spec: Any, path: str) -> SdSpec:
        return parse_sd_spec(spec, path)

    @classmethod
    def plan(cls, spec: SdSpec, request: QuantRequest) -> SdPlan:
        """Validate the request against the model adapter; raises ConfigError before any work."""
        super().check_request(spec, request)  # the adapter is one of this apiversion's: a diffusion adapter
        adapter = cast(DiffusionAdapter, request.adapter)
        raw = with_prompt_set(adapter.inference_config_class, spec.inference, spec.inference_path, spec.prompt_set,
                              "spec.dataset")
        inference = adapter.parse_inference_config(raw, spec.inference_path)
        needs_data = any(processor_class(config).needs_data(config) for config in spec.process)
        if needs_data and not spec.dump.enable_dump:
            raise ConfigError(
                "spec.multimodal_sd_config.dump_config.enable_dump is false, but spec.process needs calibration "
                "data (static activation quantization).",
                "set enable_dump: true (the data is captured once and cached), or use only data-free processors "
                "such as W8A8 dynamic (act per_token).",
            )
        return SdPlan(inference=inference, needs_data=needs_data, dump_dir=_dump_dir(spec, request))

    @classmethod
    def check_request(cls, spec: SdSpec, request: QuantRequest) -> None:
        cls.plan(spec, request)

    def run(self, spec: SdSpec, request: QuantRequest) -> None:
        plan = self.plan(spec, request)
        if spec.runner != RUNNER:
            logger.warning("runner %s is not supported by %s; using %s.", spec.runner, self.apiversion, RUNNER)
        device = request.device
        if device.indices and len(device.indices) > 1:
            logger.warning("%s runs on one device; using %s of %s.", self.apiversion, device.torch_device, device)
        adapter = cast(DiffusionAdapter, request.adapter)
        compute_dtype = compute_dtype_for(device.type, adapter.source_dtype)
        calibration: dict[str, Any] = {}
        if plan.needs_data:
            calibration = obtain_calibration(adapter, plan.inference, plan.dump_dir, device.torch_device, compute_dtype)
        else:
            logger.info("No processor needs calibration data: the float pipeline is not run and nothing is dumped.")
        for denoiser in adapter.denoisers():
            bound = adapter.for_denoiser(denoiser)
            save_path = request.save_path / denoiser.expert if denoiser.expert else request.save_path
            context = build_run_context(request, device, resumable=False, adapter=bound, save_path=save_path)
            logger.info("Quantizing %s (%s) into %s; runner %s, compute dtype %s, device %s.", denoiser.component,
                        denoiser.label, save_path, RUNNER, context.compute_dtype, device.torch_device)
            stage = Stage("main", spec.process, spec.save, samples=calibration.get(denoiser.component))
            registry.load(registry.RUNNERS, RUNNER)(context).run([stage])
